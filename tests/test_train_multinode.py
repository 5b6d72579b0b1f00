"""Two nodes under ``torchrun --nnodes 2``: separate launcher processes meeting at a c10d rendezvous.

Each launcher stands for one host (its own node rank, local rank 0), as a two-machine job would be started;
here both run on localhost. Checked: the rendezvous assigns distinct node ranks, both replicas train the same
number of steps and end bit-identical (parameters and averaged BN statistics), and rank 0 alone writes the run.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch

from reslab.io import load_state

WORKER = """\
import os, sys
from reslab.io import save_state
from reslab.train import Trainer, load_config
from reslab.train.distributed import cleanup

trainer = Trainer(load_config(sys.argv[1]), run_dir=sys.argv[2])
trainer.fit()
save_state(f"{sys.argv[3]}/rank{trainer.rank}.safetensors", trainer.model.state_dict(),
           {"world_size": str(trainer.world_size), "steps": str(trainer.global_step),
            "node_rank": os.environ["GROUP_RANK"], "local_rank": os.environ["LOCAL_RANK"]})
cleanup()
"""

CONFIG = """\
seed: 3
data: {name: digits, train_per_class: 30}
model: {name: resnet8}
optim: {lr: 0.05}
train: {epochs: 2, batch_size: 64, progress: none, device: cpu, precision: fp32}
output: {tensorboard: false}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_over_a_c10d_rendezvous_end_identical(tmp_path):
    (tmp_path / "config.yaml").write_text(CONFIG)
    (tmp_path / "worker.py").write_text(WORKER)
    launch = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
              "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--rdzv-id", "reslab-test",
              "--max-restarts", "0", str(tmp_path / "worker.py"), str(tmp_path / "config.yaml"),
              str(tmp_path / "run"), str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen(launch, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
             for _ in range(2)]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(o[-2000:] for o in outputs)

    (w0, m0), (w1, m1) = (load_state(tmp_path / f"rank{r}.safetensors") for r in (0, 1))
    assert {m0["node_rank"], m1["node_rank"]} == {"0", "1"}  # two nodes, not two processes of one
    assert m0["local_rank"] == m1["local_rank"] == "0"
    assert m0["world_size"] == m1["world_size"] == "2" and m0["steps"] == m1["steps"] == "8"
    assert w0.keys() == w1.keys()
    for key in w0:
        assert torch.equal(w0[key], w1[key]), key
    assert (tmp_path / "run" / "model.safetensors").is_file()
