"""What a deployed model folder needs to answer: its config and files, preprocessing, the network, the precision
paths and their reference check, views, calibrated probabilities, Grad-CAM, the out-of-distribution detector, the
chest X-ray gate and worklists. The demo, the Space and `Predictor` need this package alone; it imports nothing from
the others, nor datasets, scikit-learn or matplotlib (tests/test_layers.py)."""
