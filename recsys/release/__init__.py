"""The release plane: train -> evaluate -> register -> promote, gate, shadow, online guard."""
