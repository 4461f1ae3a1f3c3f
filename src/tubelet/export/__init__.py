"""Export: a trained model as a graph other runtimes run, with a parity check against the eager model.

`graph` traces a classifier's forward pass over packed particles to ONNX (dynamic particle and clip counts);
`parity` compares the written graph with the eager model on real decoded clips. The command is
``tubelet export`` (`tubelet.recipes.export`); the runtime that loads an export directory is
`tubelet.models.onnx_model`.
"""
