"""advkd: adversarial robustness distillation — pretrain teachers, distill students, attack them."""

__version__ = "0.1.0"
