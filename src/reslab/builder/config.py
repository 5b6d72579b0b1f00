"""ResBuilder's settings: one default configuration, used unchanged on every dataset.

The paper (Burghoff et al., arXiv 2308.08504) tuned its settings once on CIFAR-10 and kept them for every
other dataset; so does this one. Each default names its source: the paper and the authors' public code, or,
where one continuous PyTorch training run needs a different form, the reason it differs. The section is
declared like every config section (``reslab.schema``), so ``reslab train --help-config`` lists it and
a mistyped key or a bad value fails when the config is read.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..schema import ConfigError, at_least, in_range, option


class ResBuilderConfigError(ConfigError):
    """A bad ``resbuilder`` setting; the message names the key (``resbuilder.cycles``) and the value."""


@dataclass(frozen=True)
class ResBuilderConfig:
    """The schedule, the penalties and the structural thresholds of ResBuilder.

    Schedule. The search phase (the first ``search_fraction`` of the run's epochs) is split into ``cycles``
    equal cycles; each cycle is ``insertions_per_cycle + 1`` equal segments, counted in optimizer steps (each
    at least the steps the layer LASSO needs to judge a new block: ``schedule.judgement_steps``; fewer cycles
    when the search is shorter). At the end of each segment blocks
    whose branch gain fell below ``delete_threshold`` are removed; between segments one block is inserted;
    at the end of each cycle channels below ``width_threshold`` are cut. The rest of the run is fine-tuning
    of the found architecture with no penalty and no structural change.
    """

    # Paper code: 7 MorphNet (width) steps, each after 3 layer-insertion steps (``number_morph_steps``,
    # ``number_layer_steps``). Fewer cycles are run when the search phase is too short for 7 cycles of
    # segments that each give the layer LASSO time to judge a new block (``schedule.judgement_steps``).
    cycles: int = option(7, at_least(1), "width steps (cycles) in the search phase")
    insertions_per_cycle: int = option(3, at_least(0), "block insertions per cycle")
    # Ours: the paper trains every architecture for 20 epochs (28 trainings) and then retrains the final one
    # with the full recipe; one continuous run searches for the first third of its epochs and trains the
    # found network for the other two thirds. So a run of 1.5 x E epochs gives the found network the E
    # epochs a fixed network gets (benchmarks/resbuilder_evidence.py does that). With half the epochs
    # searching (the first default) and a run as long as a fixed network's, the found network trained for
    # half of their epochs: on 5,000 CIFAR-10 images ResNet-20 itself loses 6 points from 30 epochs to 15,
    # and the found network was 2.5 points below what 30 epochs gave it (docs/resbuilder.md, "Larger
    # training sets"). 3/4 searching, tried before, was worse still.
    search_fraction: float = option(
        1 / 3, in_range(0.0, 1.0, low_open=True, high_open=False),
        "share of the epochs that search (the rest train the found network)"
    )
    # Ours: fine-tuning starts the learning-rate schedule again over its epochs. The paper retrains its final
    # architecture; continuing the run's schedule instead left fine-tuning at under 15 % of the base learning
    # rate (cosine), and the found networks 4 points below the same specs retrained (CIFAR-10 subset).
    finetune_restart: bool = option(True, doc="fine-tuning restarts the learning-rate schedule")
    # Ours (the issue): a new block starts near the identity, its branch's last scale at 0.1, so the network's
    # function is barely disturbed; the paper initialises new layers afresh. Not at 0: a branch whose output
    # is zero passes no gradient to its convolutions, and on the CIFAR-10 subset no block inserted at 0 into
    # stage 2 or 3 ever grew past the layer LASSO; at 0.1 they learn from the first step.
    insert_gain: float = option(0.1, at_least(0.0), "a new block's last BN scale (near the identity)")
    # Ours: a new block's inner widths are half its neighbour's (the paper copies the neighbour). A block
    # the layer LASSO keeps then costs half the MACs of a copy; on CIFAR-10 the LASSO keeps first-stage
    # blocks, which at full width cost as much as last-stage ones. Calibration (seeds 3/4/5, CIFAR-10 subsets
    # of 1,200 images; docs/resbuilder.md): the same accuracy as with copies (49.84 against 49.71 %) at 0.6x
    # the MACs (18.9 against 31.1 MMACs); MNIST 0.27 points lower (96.55 against 96.82 %) at 10.4 against
    # 12.8 MMACs. On 5,000 CIFAR-10 images (seeds 0/1) the trade is 0.3 to 1.9 points for 0.6x the MACs.
    # Next to a narrowed block, a new one is narrower still; 1 inserts the paper's copies.
    insert_width: float = option(
        0.5, in_range(0.0, 1.0, low_open=True, high_open=False), "a new block's inner widths, x its neighbour's"
    )
    # Paper code: draw up to 10 insertion points to find an architecture not trained before.
    insert_attempts: int = option(10, at_least(1), "draws to find an insertion not tried before")
    # Layer LASSO strength lambda: the loss gets lambda * sum over removable blocks of sqrt(n) * ||gain||
    # (the final BN's gamma and beta of the branch, n values; see ``penalties``), applied exactly, as the
    # proximal step that follows every optimizer step (step size = the learning rate of the moment). A block
    # survives while the data pulls on its gain harder than lambda, per value; that balance does not depend
    # on the number of steps, the data set's size or the learning rate. The paper's 1e-8 is an L1 on raw conv
    # kernels under Adam, which moves each weight by about the learning rate per step whatever the gradient;
    # ours acts on the branch gains under SGD. Set on CIFAR-10 subsets (1,200 images, 30 epochs, from ResNet-8;
    # docs/resbuilder.md). First 0.06; but then a rise of two validation images spared most deletions (see
    # ``skip_delete_gain``). Judged by the layer LASSO alone, 0.06 left ResNet-8 plus at most two blocks,
    # 1.8 points below ResNet-20 on CIFAR-10; 0.04 keeps the blocks whose gain the data holds up
    # (0.6 points below it, seeds 3/4). 0.045 with ``layer_lasso_loss_power`` 0.3 (below): on CIFAR-10,
    # whose training loss only falls from 2.2 to 1.4 during the search, that is 0.045 to 0.039.
    layer_lasso: float = option(0.045, at_least(0.0), "layer LASSO strength on the branch gains")
    # The layer LASSO's strength follows the training loss: lambda * (L / ln K) ** p, L the last epoch's
    # mean training loss, ln K the loss of chance on K classes (so lambda holds at the start). The data's
    # pull on a block's gain shrinks with the loss, a fixed lambda does not: once MNIST's training loss is
    # near 0.05 every inserted block dies within two epochs (calibration seed 3 ended as ResNet-8). p = 1
    # (tried first, as penalties relative to the loss) let MNIST grow past ResNet-20's MACs; on seeds 3/4/5
    # p = 0.25 / 0.35 / 0.5 gave MNIST 12 / 17 / 20 MMACs. With p = 0.3 and lambda 0.045 the CIFAR-10 runs
    # found the same networks as lambda 0.04 fixed, and MNIST 96.70 % at 13.4 MMACs instead of 96.55 % at
    # 10.3 (docs/resbuilder.md, "A layer LASSO that follows the loss"). 0 keeps lambda fixed.
    layer_lasso_loss_power: float = option(
        0.3, at_least(0.0), "the layer LASSO scales with (train loss / ln K) ** this; 0: fixed"
    )
    # Paper code: a block goes when the mean absolute value of its weights is below 1e-3. Those were conv
    # kernels with Glorot initialisation (mean |w| about 0.07 for a 3x3x16x16 conv), so the threshold is about
    # 1.4 % of a fresh layer's scale; our gains start at 1, so the same relative threshold is 1e-2.
    delete_threshold: float = option(1e-2, at_least(0.0), "a block whose branch gain is below this goes")
    # Paper code ("layer LASSO momentum"): no deletion after an insertion that raised validation accuracy by
    # more than 1.5 points, so a block that just helped is not judged before it has grown. Ours also asks the
    # rise to exceed the noise of the validation set (two standard errors of a difference: 12 points on the
    # evidence's 130 validation images, so there it never fires), and never spares the search's last
    # deletion (``ResBuilderHook.insertion_paid``).
    skip_delete_gain: float = option(
        0.015, at_least(0.0), "no deletion after an insertion that raised val accuracy by more"
    )
    # Width group LASSO strength, in the same units: the loss gets lambda * sum over channels of the channel's
    # FLOP weight (its MACs over the network's mean per channel: MorphNet's cost weighting, made independent
    # of the input size) times the norm of its values (BN scales and shifts, conv rows), applied as proximal
    # steps. Set once on the same subsets: 0.06 cut the stem to 7 channels and left 2-channel blocks (the
    # found networks only as good as ResNet-8 at the same cost); 0.03 cut a few channels every cycle on 5,000
    # images, none on 1,200 (whose 15 search epochs leave the data's pull on every channel above it).
    width_lasso: float = option(0.03, at_least(0.0), "FLOP-weighted group LASSO strength on channels")
    # Paper code: MorphNet counts a channel alive when its BN scale exceeds 1e-2 (BN scales start at 1). Ours is
    # relative to the strongest channel of the group, since BN makes inner widths scale-free (``penalties``).
    width_threshold: float = option(
        1e-2, at_least(0.0), "a channel below this x its group's strongest is cut"
    )
    # Paper code (``morphnet_routine(expanding=True)``): after the cut, MorphNet's expand step multiplies every
    # width by one factor. The paper's code aims at a fixed FLOP target; ours gives back exactly the MACs the
    # cut freed (Net2Net copies of the strongest channels), so the width step only moves channels to where
    # they cost least and the depth search alone sets the cost. Off by default: on the calibration subsets it
    # found better architectures (retrained from scratch) but not better trained networks within the run
    # (docs/resbuilder.md, "MorphNet's expand step"); with the default width_lasso it rarely fires there.
    expand_widths: bool = option(False, doc="give the MACs a cut freed back as copies of the strongest channels")
    # Ours, after Ash & Adams ("On warm-starting neural network training", NeurIPS 2020; the paper's code
    # retrains its final architecture from scratch instead): fine-tuning starts from (1 - r) * the searched
    # weights + r * a fresh initialisation of the found network ("shrink and perturb"). A warm start fits
    # the data from where the search left it and generalises worse: on the MNIST calibration subsets the
    # search ends with a training loss near 0.02, fine-tuning has nothing left to learn, and the found
    # networks ended 1.2 points below the same specs retrained (96.1 against 97.3). With the same found
    # networks, r = 0.3 gave MNIST +0.9 points (97.0) and CIFAR-10 -0.5; r = 0.5 the same on MNIST and
    # -2.4 on CIFAR-10, whose loss is still high when the search ends (docs/resbuilder.md).
    finetune_reinit: float = option(
        0.3, in_range(0.0, 1.0, high_open=False), "fine-tuning starts from shrink-and-perturb weights with this r"
    )


SECTION = ResBuilderConfig  # the ``resbuilder`` section of a training config (reslab.train.plugins)
