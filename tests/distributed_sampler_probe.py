"""Run under `torchrun --nproc_per_node 2`: records which sample indices each process trains on."""
import json
import sys

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from torch.utils.data import DataLoader

from modeling.training.data import BalancedSampler

accelerator = Accelerator(cpu=True)
labels = [0] * 30 + [1] * 90
sampler = BalancedSampler(labels, seed=7)
loader = accelerator.prepare(DataLoader(torch.arange(len(labels)), batch_size=8, sampler=sampler, drop_last=True))
loader.set_epoch(2)
seen = torch.cat([batch for batch in loader]).tolist()
everyone = gather_object([{"rank": accelerator.process_index, "indices": seen}])
if accelerator.is_main_process:
    sampler.set_epoch(2)
    json.dump({"processes": everyone, "single_process_draw": list(sampler)}, open(sys.argv[1], "w"))
accelerator.wait_for_everyone()
accelerator.end_training()  # destroys the process group: without it gloo can abort at interpreter exit
