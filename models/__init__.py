"""Shipped weights of yotocodec (installed as ``yotocodec.models``); see README.md here for the model card."""
