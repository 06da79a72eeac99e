"""impresslearn: continual learning without forgetting on frozen random networks.

Implements SupSup (Wortsman et al., "Supermasks in Superposition", NeurIPS 2020) and ImpressLearn
(Bhardwaj et al., "ImpressLearn: Continual Learning via Combined Task Impressions", arXiv 2210.01987).
"""

__version__ = "0.1.0"
