"""The chest X-ray gate's training: the non-X-ray negatives it is fitted against (also the out-of-distribution
evaluation's images) and the fit itself. Nothing deployed imports it: the gate ships as a file beside the weights."""
