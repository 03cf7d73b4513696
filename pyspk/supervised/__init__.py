"""Supervised speaker classification on (pseudo-)labels: AAM-softmax and its trainer objective."""
