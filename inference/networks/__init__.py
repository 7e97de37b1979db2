"""The network runners: a fold's nnU-Net network as a torch module (`torch_network`) or as an OpenVINO
compiled model (`openvino_network`); both map a (B, C, *patch) batch to (B, K, *patch) logits."""
