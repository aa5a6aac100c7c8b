"""The training plane: one ``train()`` for full retrains and fine-tunes, losses, optimizer."""
