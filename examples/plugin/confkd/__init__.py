"""An example advkd plugin: one method (ConfKD) and one attack (FGSM with a random start)."""
