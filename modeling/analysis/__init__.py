"""Analysis of a trained model: the shortcut scores (decisions flipped by blacking out or cropping away what lies
outside the thorax, Grad-CAM inside the lung fields) and the evaluation plots."""
