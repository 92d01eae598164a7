#!/usr/bin/env python3
"""PyTorch anchor for `npm run bench`: the project's seed model, trained the usual PyTorch way.

D 784-1024-512-256-1 (LeakyReLU 0.2, dropout 0.3 after each hidden layer), G 100-256-512-1024-784
(LeakyReLU 0.2, tanh), BCE-with-logits, non-saturating G loss, Adam lr 2e-4 betas (0.5, 0.999),
batch 100 per rank, random "real" data in [-1, 1]. One iteration = one D step on a real batch and
a fake batch G(z) (no gradient into G), then one G step, as DCGAN-style code does.

    python3 bench/pytorch_gan.py --world 1                       # one process, no torch.distributed
    python3 bench/pytorch_gan.py --world 2 --rank R --master 127.0.0.1:29500   # one line per rank

With --world > 1 each rank joins a gloo process group and G and D are each wrapped in
DistributedDataParallel (CPU), which averages gradients with allreduce during backward. Set
GLOO_SOCKET_IFNAME to the interface the ranks reach each other on (lo on one host).
With --hook fp16 both DDP modules register DDP's fp16_compress_hook: gradients are allreduced as
IEEE half and decompressed, as `--wire 16` sends gradients (PyTorch keeps full weights on every
rank, so nothing else crosses the wire).
Rank 0 prints one JSON line: {"mode":"pytorch","world":W,"samplesPerSec":...,"msPerIter":...,"threads":T}.
With --marks it also prints {"event":"timed-start"} just before the timed iterations.

Two choices that keep the comparison honest (both are what the project's workers do too):
- D sees the real and fake rows stacked as one batch of 200: one forward, one backward, one
  allreduce per D step; the loss is the sum of the two halves' mean BCE.
- In the G step D is run as its plain module with its parameters frozen, so no gradient of D is
  computed or allreduced there (DCGAN code computes and discards it).
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

BATCH, NOISE, IMAGE = 100, 100, 784


def discriminator() -> nn.Module:
    layers, width = [], IMAGE
    for h in (1024, 512, 256):
        layers += [nn.Linear(width, h), nn.LeakyReLU(0.2), nn.Dropout(0.3)]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, 1))


def generator() -> nn.Module:
    layers, width = [], NOISE
    for h in (256, 512, 1024):
        layers += [nn.Linear(width, h), nn.LeakyReLU(0.2)]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, IMAGE), nn.Tanh())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--world', type=int, default=1)
    p.add_argument('--rank', type=int, default=0)
    p.add_argument('--master', default='127.0.0.1:29500', help='ADDR:PORT of rank 0 (world > 1)')
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--iters', type=int, default=50, help='timed iterations')
    p.add_argument('--warmup', type=int, default=5, help='untimed iterations first')
    p.add_argument('--marks', action='store_true', help='rank 0 also prints {"event":"timed-start"}')
    p.add_argument('--hook', choices=['none', 'fp16'], default='none', help="DDP communication hook (fp16: DDP's fp16_compress_hook)")
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(1 + a.rank)
    dist = None
    G, D = generator(), discriminator()
    Dplain = D
    if a.world > 1:
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel as DDP
        dist.init_process_group('gloo', init_method=f'tcp://{a.master}', world_size=a.world, rank=a.rank)
        G, D = DDP(G), DDP(D)  # DDP broadcasts rank 0's initial weights
        if a.hook == 'fp16':
            from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
            G.register_comm_hook(state=None, hook=default_hooks.fp16_compress_hook)
            D.register_comm_hook(state=None, hook=default_hooks.fp16_compress_hook)
        Dplain = D.module
    optG = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optD = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    reals = [torch.rand(BATCH, IMAGE) * 2 - 1 for _ in range(8)]
    ones, zeros = torch.ones(BATCH, 1), torch.zeros(BATCH, 1)

    def iteration(i: int) -> None:
        # D step: real rows and G(z) rows (no gradient into G), one pass.
        with torch.no_grad():
            fake = G(torch.randn(BATCH, NOISE))
        out = D(torch.cat([reals[i % len(reals)], fake]))
        lossD = F.binary_cross_entropy_with_logits(out[:BATCH], ones) + F.binary_cross_entropy_with_logits(out[BATCH:], zeros)
        optD.zero_grad(set_to_none=True)
        lossD.backward()
        optD.step()
        # G step, non-saturating: maximise log D(G(z)); D frozen.
        for q in Dplain.parameters():
            q.requires_grad_(False)
        lossG = F.binary_cross_entropy_with_logits(Dplain(G(torch.randn(BATCH, NOISE))), ones)
        optG.zero_grad(set_to_none=True)
        lossG.backward()
        optG.step()
        for q in Dplain.parameters():
            q.requires_grad_(True)

    for i in range(a.warmup):
        iteration(i)
    if dist:
        dist.barrier()
    if a.marks and a.rank == 0:
        print(json.dumps({'event': 'timed-start'}), flush=True)
    t0 = time.perf_counter()
    for i in range(a.iters):
        iteration(a.warmup + i)
    if dist:
        dist.barrier()
    secs = time.perf_counter() - t0
    if a.rank == 0:
        print(json.dumps({'mode': 'pytorch', 'world': a.world, 'samplesPerSec': a.world * BATCH * a.iters / secs,
                          'msPerIter': 1000 * secs / a.iters, 'threads': a.threads, 'iters': a.iters, 'hook': a.hook}), flush=True)
    if dist:
        dist.destroy_process_group()


if __name__ == '__main__':
    main()
