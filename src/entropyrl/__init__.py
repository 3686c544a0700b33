"""entropyrl: reinforcement learning of reasoning language models, built around policy entropy.

Library modules hold the maths as pure functions of tensors (``losses``, ``selection``,
``advantages``, ``tokenstats``, ``dynamics``, ``law``); entry points (the ``entropyrl`` CLI) are
thin layers over them. Importing the package has no side effects and does not import torch.

Shape legend used in every docstring: ``B`` responses in a batch, ``G`` responses per prompt
group, ``T`` response tokens (padded), ``V`` vocabulary size, ``D`` hidden size, ``N`` valid
(unmasked) tokens.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
