"""The numpy engine: the default CPU path. numpy for preprocessing and export, the network through
OpenVINO; never imports torch (that import alone costs seconds of start-up and hundreds of MB)."""
