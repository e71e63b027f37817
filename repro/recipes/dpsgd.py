"""DPSGD -- decentralized parallel SGD (gossip on a topology): the papers whose claims repro/experiments/dpsgd.py
judges. Their settings there are the project's tasks with explicit flags (docs/decentralized.md)."""
from repro.recipes import paper

DPSGD = paper("DPSGD", "Lian, Zhang, Zhang, Hsieh, Zhang, Liu: Can Decentralized Algorithms Outperform Centralized "
                       "Algorithms? (D-PSGD), NeurIPS 2017")
DPSGD_LR = paper("DPSGD-LR", "Zhang, Liu, Feng, Cui, Kingsbury, Tu: Loss Landscape Dependent Self-Adjusting Learning "
                             "Rates in Decentralized SGD, arXiv 2112.01433")
