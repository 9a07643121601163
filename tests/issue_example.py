"""The run file shown in the experiments issue, shared by the config and sweep tests."""

ISSUE_EXAMPLE = """\
[data]
name = "digits"
[model]
sizes = [64, 128, 128, 10]
activation = "tanh"
init = "glorot_uniform"
batchnorm = false
residual = false
dropout = 0.0
[train]
loss = "cross_entropy"
optimizer = "sgd"
lr = 0.05
batch_size = 32
epochs = 3
seed = 0
[probes]
every = 10
[sweep]
"model.activation" = ["tanh", "relu"]
"train.seed" = [0, 1]
"""
