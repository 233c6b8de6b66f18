"""The embedded offline demo: a toy world, its encoders, shipped captions, generated assets.

- `demo.world`: scenes, captions and latent vectors (pure numpy, seeded).
- `demo.encoders`: the `toy` and `toy-pivot` encoders (entry points in pyproject.toml).
- `demo.assets.prepare_demo(workdir)`: tiny models, modal items and evaluation manifests,
  built once into `<workdir>/demo`.
- `demo/data/`: the shipped captions, made by `python -m demo.make_captions`.

Every model here is a stand-in; numbers computed with them show the method's mechanics,
not any real model's quality.
"""

from demo.assets import prepare_demo
from demo.world import World

__all__ = ["World", "prepare_demo"]
