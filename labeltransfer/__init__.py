"""CT -> MRI label transfer: MIND-SSC descriptor and the pipeline tools around nnU-Net.

See labeltransfer/README.md. Tools: `python -m labeltransfer {descriptors,pseudolabel,filter,propagate,assemble}`.
"""
