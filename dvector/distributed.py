"""Training on several processes (torchrun, DistributedDataParallel): all that train.py does differently then.

    torchrun --standalone --nproc_per_node 2 train.py ...     # e.g. one process per GPU

Each process trains on its share of every batch; DDP averages the gradients, so that all the
processes keep the same weights, those of the first (rank 0) at the start. The first process
prints and writes the checkpoints for all. Run by plain `python train.py`, none of this is used.
"""
import contextlib
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler


def started_by_torchrun():
    """Whether torchrun started this process as one of several."""
    return int(os.environ.get('WORLD_SIZE', '1')) > 1


class Torchrun:
    """This process's part in a torchrun run; `with Torchrun(...) as ddp:` joins the others, and leaves at the end.

    device: the device asked for; a GPU run gives each process its own GPU (ddp.device).
    """

    def __init__(self, device, batch_size):
        self.world_size = int(os.environ['WORLD_SIZE'])
        if batch_size % self.world_size:
            raise ValueError(f"the batch size {batch_size} must split evenly over the {self.world_size} processes")
        if device.type == 'cuda':
            device = torch.device('cuda', int(os.environ['LOCAL_RANK']))
            torch.cuda.set_device(device)
        self.device = device
        self.rank = int(os.environ['RANK'])
        self.quiet = contextlib.ExitStack()

    def __enter__(self):
        dist.init_process_group('nccl' if self.device.type == 'cuda' else 'gloo')
        if self.rank != 0:  # the first process speaks for all
            self.quiet.enter_context(contextlib.redirect_stdout(self.quiet.enter_context(open(os.devnull, 'w'))))
        return self

    def __exit__(self, *exc):
        self.quiet.close()
        dist.destroy_process_group()

    @property
    def is_first(self):
        """Whether this is the process that prints and writes checkpoints."""
        return self.rank == 0

    def train_loader(self, train_set, batch_size, seed, **workers):
        """The training batches of this process: its 1/world_size share of each batch of `batch_size` (drop_last as
        train.py's single process)."""
        sampler = DistributedSampler(train_set, self.world_size, self.rank, shuffle=True, seed=seed, drop_last=True)
        return DataLoader(train_set, batch_size=batch_size // self.world_size, sampler=sampler, drop_last=True,
                          **workers)

    @staticmethod
    def start_epoch(loader, epoch):
        """Shuffle the shares anew for the epoch (the same shuffle in every process)."""
        loader.sampler.set_epoch(epoch)

    def wrap(self, net):
        """net made to average its gradients over the processes (its state_dict stays the net's own)."""
        return DistributedDataParallel(net, [self.device] if self.device.type == 'cuda' else None)

    @staticmethod
    def barrier():
        """Wait until every process gets here."""
        dist.barrier()

    def mean(self, *values):
        """The values averaged over the processes (each worked on an equal share of the data)."""
        total = torch.tensor(values, dtype=torch.float64, device=self.device)  # NCCL reduces only GPU tensors
        dist.all_reduce(total)
        return tuple((total / self.world_size).tolist())
