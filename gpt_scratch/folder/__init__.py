"""A trained model as a folder other software reads: written durably, checked in one place, loaded, sampled
from, converted to stock GPT-2, described by a model card and shared on the Hub."""
