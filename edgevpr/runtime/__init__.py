"""The torch-free runtime that ships on the robot: preprocess, embed, look up.

Nothing in this package may import torch (a test enforces it).
"""
