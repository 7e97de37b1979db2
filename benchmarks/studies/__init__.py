"""One-off studies: our predictor against nnU-Net, path agreement, the network's limit, OpenVINO levers, ROI, large images, speed of the scorer and the phantoms."""
