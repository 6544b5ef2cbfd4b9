"""ShiftViT outside the trainer: the model in PyTorch (shiftvit.model), the
checkpoint reader (shiftvit.checkpoint), the input transform
(shiftvit.transform) and the ONNX graph builder (shiftvit.onnx_graph).

Scripts put this folder's parent (python/) on sys.path; from a notebook:

    import sys; sys.path.insert(0, "python")
    from shiftvit.model import ShiftViT
"""
