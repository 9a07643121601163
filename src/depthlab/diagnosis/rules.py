"""Diagnostic rules: each reads a short probed training run (the tidy probe table, whatever
produced it, plus the loss history) and returns its metric (lower is healthier) and, when the
metric crosses its threshold, a :class:`Finding`. A :class:`Rule` carries the finding kind, the
metric's name, its threshold and the check; :data:`RULES` lists them in priority order, causes
before symptoms (a too-large step before the loss it blows up, an initializer before the
saturation and vanishing it causes, vanishing gradients before the units they leave inactive),
which is the order of the findings before verification.

Thresholds (module constants):

============================  ================================================================
``DIVERGENCE_RISE`` 1.5       non-finite loss, or the mean loss of the last 10% of steps above
                              1.5 x the reference ``max(min(loss at step 0, running minimum of
                              the 10%-window moving average), 0.1 x loss at step 0)``: the loss
                              came back up from where it started or from its best (the floor
                              keeps a near-zero loss's noise from counting); when the probe
                              table has the fixed probe batch's loss, that loss must have risen
                              as much (the same ratio of its last value): the metric is the
                              smaller rise, so the noise of small mini-batches' losses (batch
                              size 1: 7 of 24 healthy runs) is no divergence
``SHIFTED_FRAC`` 0.9          vanishing gradients in layers of a ReLU-family activation whose
                              entries are more than 90% on the flat side (``inactive_frac`` at
                              step 0, median over those layers) with a negative mean
                              pre-activation and non-zero biases: the biases are the cause,
                              the cure ``{"bias_init": "zeros"}`` (leaky_relu/elu, biases -5:
                              23x / 13x smaller gradients per layer; zero biases trained to
                              0.04 / 0.02, batch norm to 0.16 / 0.06)
``UPDATE_RATIO_HIGH`` 0.1     largest per-step median over layers of ``||dW|| / ||W||``: about
                              1e-3 is healthy, >= 1e-1 means each step rewrites a tenth of the
                              weights: the learning rate is too high (CS231n's rule of thumb),
                              unless the fixed probe batch's loss fell by more than
                              ``LR_STEP_FALL`` (1%) from the probe before each probed step at
                              or above it: steps that keep lowering the loss do not overshoot
                              (a 4-16-1 tanh regression, sgd lr 0.1: ratios up to 0.36, the
                              16->1 output layer's weights growing to the targets' scale,
                              while the probe loss fell 6.6 -> 0.11 in 10 steps; lr 0.01
                              left the train loss at 4.2). The first ``EARLY_UPDATE_STEPS``
                              (10) updates are measured too, probed or not
                              (``RunContext.early_update_ratios``): Adam's first steps are its
                              largest (about lr / rms(W) each), and a post-norm transformer
                              at Adam lr 0.1 rewrote 0.67 of its weights at step 1, 0.26 at
                              3, while its probed steps (10, 20, ...) read 0.075 and less;
                              such large first steps count unless the mean training loss of
                              the first 10 updates (every step's mini-batch loss, read after
                              each) fell by more than ``LR_STEP_FALL`` below the loss at step
                              0 (the probe batch's): it was 1.03-1.14x that loss (seeds 0-2)
                              and the run ended at chance (train loss 1.29-1.33, ln 4 = 1.386;
                              lr 0.01: 0.02), where lr 0.03's first steps (0.21 at step 1)
                              lowered it to 0.71-0.85x (a run whose loss became non-finite
                              is the divergence finding's)
``UPDATE_RATIO_ROSE`` 0.03     lr_too_high's lower threshold, for first updates that made the
                              loss worse: some of the first ``EARLY_UPDATE_STEPS`` updates at
                              or above it (median over layers) while the mean training loss
                              over them rose ``LOSS_ROSE`` (1.1) x above the loss at step 0,
                              and the probe batch's loss ended at a constant prediction's
                              (:func:`stuck_at_chance`) or not below its start: the steps
                              overshot and training never recovered. A post-norm transformer
                              classifier (2 layers, d 32) at sgd lr 1.0 on digits: medians
                              0.091, 0.094 (max over layers 0.85; q/k/v's small steps hold the
                              median), the loss 2.45 -> 3.68 in 2 steps, mean 1.15x, ended at
                              ln 10 (val 0.06; lr 0.1: 0.45) with only dead_relu's "initialize
                              with he_normal". Healthy or merely slow nets (mlp/tanh/gelu/
                              lstm/cnn/bn/pre- and post-norm transformers, sgd 0.03 .. 3,
                              adam 1e-3 .. 3e-2) had a mean of 0.33 .. 1.033x, those at
                              chance 1.007x at most, moving 3e-3 or less; the NumPy doctor on
                              96 digits runs (relu/tanh/sigmoid/gelu, 3 and 7 hidden layers,
                              sgd 0.03 .. 3, adam 3e-4 .. 3e-2): never
``PENALTY_SHRINK`` 4          the weight penalty is too strong (``l1``/``l2`` given): the hidden
                              layers' weight std shrank by 4x or more from step 0 to the end
                              (median over layers) while the probe batch's loss did not end
                              below a constant prediction's (by 1%): 5-16-16-3 relu, He, sgd
                              lr 0.01, 200 steps, l2 = 1 (weights x0.98 per step): 55x,
                              loss at ln 3; l1 = 1: 85x. Before: a clean bill of health (l2)
                              or lr_too_high (l1: the penalty's own steps on weights near 0);
                              lr_too_high defers to it unless the first updates were large too
``PENALTY_DOMINANCE`` 5       ... or, for an adaptive optimizer whose steps are ~lr whatever the
                              gradient, the weights shrank ``PENALTY_ACTING`` (1.25x) or more
                              while the penalty's gradient was 5x the data's or more in every
                              hidden layer at the end (``penalty_dominance``): 5-16-16-3 relu,
                              Adam lr 1e-3, 200 steps, l2 = 1: 1.41x, 13x, loss at ln 3 (no
                              penalty: 0.59); digits 64-64-64-10: 1.96x, 38x (l2 = 0.1 learns:
                              2.5x); a deep sigmoid net's vanishing gradients: 1.1x at the top
``LR_SHORTFALL`` 1            the learning rate is too low: ``1e-3`` (a healthy ``||dW|| / ||W||``)
                              over the largest update ratio of any hidden layer at any probed
                              step, above 1 (no layer ever moved by 1e-3 of its weights),
                              when the probe batch's loss at the end is not below
                              ``LR_LOW_FIT`` (0.5) x a constant prediction's nor 10x above it
                              (``CHANCE_ABOVE``: an exploded net's loss, not a near-constant
                              prediction's): training got nowhere. Digits
                              64-64-64-10 relu, sgd, 200 steps: lr 1e-2 ratios up to 1.9e-3,
                              loss 0.57; lr 1e-4 2.6e-5 (2.90), lr 1e-5 2.7e-6 (2.99), adam 1e-6
                              3.3e-6: a clean bill of health before. It was 10: 8 He SiLU
                              layers of 16, sgd lr 0.01 (the forward signal shrinking 1.4x per
                              layer), largest ratios 2.3e-4 and 1.7e-4 at seeds 0 and 2, ended
                              at the constant prediction's loss (2.300, 2.296) with a clean
                              bill of health; lr 0.1 trains them to val acc 0.47 / 0.57, Adam
                              lr 1e-3 to 0.82 / 0.80. The largest layer's, not the median: with
                              vanishing gradients the layers near the output still move. Cure:
                              the learning rate times ``10^ceil(log10(metric))``, the smallest
                              power of 10 that brings the largest ratio to 1e-3 or more (lr
                              1e-5 -> 1e-2, adam 1e-6 -> 1e-3). It was 3 (a third of 1e-3):
                              shallow sigmoid nets at the doctor's default sgd 0.01 (the
                              slope 1/4 shrinks their steps) moved 4.3e-4 .. 6.6e-4 and ended
                              at a constant prediction's loss with a clean bill of health
                              (64-32-32-10 / 64-256-256-10 digits: val 0.19 / 0.09, at lr 0.1
                              0.59 / 0.59; mnist5k 0.19 / 0.52 -> 0.60 / 0.80; clusters 0.10 ->
                              0.28); mnist1d relu 128x2 sgd 3e-3 (6.7e-4, 1.0x, 0.15 -> 0.30),
                              clusters gelu 256x2 sgd 3e-3 (5e-4, 0.79x, 0.36 -> 0.77). No
                              net at that default moved less than 1e-3 while learning (digits,
                              clusters, mnist1d, spirals, mnist5k; relu/tanh/gelu/selu; 2x32,
                              2x256, 6x64: 1.1e-3 .. 8e-3); spirals nets at chance are not
                              helped by 10x within 200 steps (the verification says so)
``LR_LOW_FIT`` 0.5            lr_too_low's loss gate: "not below a constant prediction's"
                              reads "not below 0.5x it" (with the upper bound 10x as above):
                              such small steps leave a net far from fitted, not only at
                              chance. Digits 64-64-64-10 relu, sgd lr 1e-3: ratios up to 2.4e-4,
                              loss 2.22 = 0.96x ln 10, val acc 0.38 (lr 1e-2: 0.82) was a clean
                              bill of health; so were (200 steps, largest ratio < 3.3e-4, loss
                              0.53-0.98x a constant's) tanh sgd 1e-3 (val 0.26 -> 0.80 at 10x
                              the lr), tanh adam 3e-5 (0.85x -> 0.87), elu sgd 1e-3 (0.59 ->
                              0.88), relu sgd momentum 7e-4 on mnist1d (0.26 -> 0.44), gelu
                              256 sgd momentum 6e-4 on clusters (0.51 -> 0.84). A net this slow
                              that fits anyway ends lower (a 1024-unit relu layer on clusters,
                              sgd 0.01: ratios 3.1e-4, loss 0.27x, val 0.81; 10x: 0.82)
``INIT_MISMATCH`` 4           measured initial Var(W) / the recommended initializer's variance
                              (He: relu family, Glorot: tanh/sigmoid/softsign, LeCun: selu)
                              above 4 or below 1/4 (above: 4x the critical variance of the
                              mean field where the recommended one is deep in its ordered
                              phase, chi1 < 0.25: sigmoid, Glorot's chi1 0.056, critical
                              103x Glorot's), or 0 (zeros/constant: symmetric units;
                              not checked with batch normalization); a variance is judged on
                              at least ``INIT_MIN_WEIGHTS`` (20) weights (sample variances of
                              fewer scatter by factors: a 2x2 Glorot layer measured 0.19x; a
                              1x1 layer's std is 0); a variance of 0 in any layer of >= 2
                              units (equal values are no random draw). A layer is flagged
                              past 4 by more than ``INIT_MISMATCH_SD`` (2) relative sds of
                              its sample variance, sqrt(2 / N) for N weights: PyTorch's
                              default init in a relu Linear(64, 96) is exactly 4x below He's
                              and was flagged at 98 of 200 seeds (the bound is now 4.15)
``INIT_MISMATCH_FIT`` 0.2     and flagged only when the probe batch's loss ends above
                              ``INIT_MISMATCH_FIT`` x a constant prediction's (or is not finite,
                              or either is unknown), as saturation and mean shift: the finding
                              claims the initializer held training back, and a net that fits
                              is not held back. A variance of 0 is flagged whatever the loss
                              (symmetric units). PyTorch's default init (1/6 He's) in a
                              64-64-64-10 relu net, digits, adam 1e-3: loss 0.092x, val acc
                              0.939, He's 0.928 (did not help); under sgd 0.05 0.213x, 0.878
                              (He: 0.933, still flagged). Measured (digits, mnist1d, clusters,
                              spirals; 2 or 4 layers of 64/128; adam 1e-3, sgd 0.05; default,
                              Glorot, N(0, 0.01) relu, N(0, 0.25) tanh): every other flagged net
                              ended at 0.21-1.8x
``DROPOUT_NOISE`` 1           dropout too strong: the dropout layers the signal passes in turn (the
                              network's own layers, not those inside a residual branch, which
                              the skip path passes by) compound their noise: an inverted mask
                              ``m / (1 - p)`` has mean 1 and variance ``p / (1 - p)``, and a
                              product of independent ones ``prod 1 / (1 - p_i) - 1`` (the
                              metric: the noise's variance over the signal's). Flagged above 1
                              (more noise than signal) when the probe batch's loss stays at a
                              constant prediction's (:func:`stuck_at_chance`) although the
                              steps were not too small for training (lr_too_low's shortfall
                              at most ``DROPOUT_TINY_STEPS`` 3: some layer moved a third of
                              1e-3 of its weights; lr_too_low defers to it, since the
                              noise also slows the steps: 6e-4 .. 9e-4 here). Digits, 6 relu
                              He layers of 64, Adam
                              1e-3, 200 steps: dropout 0.5 (noise 63x) ended at 2.304 = ln 10,
                              val acc 0.09, the eval-mode activation std falling 0.80 -> 0.05
                              from layer 1 to 6, and a clean bill of health (1000 steps: the
                              top layers die); dropout 0.2 (2.8x): 0.65x, val 0.49; 0.1
                              (0.88x): val 0.85; none: 0.89. Cure: the rate whose compounded
                              noise is at most 1x the signal, ``1 - 2^(-1/k)`` for ``k`` layers
``DEAD_FRAC`` 0.3             fraction of units with f'(s) = 0 on every probe example at the end
``DEAD_CHANCE_SD`` 2          (activations with a zero-derivative region: ReLU, step), judged
``DEAD_DIEOFF_Z`` 3           on at least ``DEAD_MIN_EXAMPLES`` (10) probe examples: a unit off
                              on each of ``n`` independent examples with probability 1/2 is
                              "dead" on all with probability 2^-n (50% of the units on 1
                              example). A layer above 0.3 is a finding when that is beyond
                              chance: a unit whose weights and bias start symmetric about 0 is
                              off on any one example with probability 1/2, so on every example
                              with at most 1/2, reached when the examples' representations
                              coincide, as they nearly do deep in a ReLU net (its correlation
                              map's fixed point is c* = 1). Healthy zero-bias He ReLU nets
                              (200 steps, sgd 0.05 / adam 1e-3; depth 4-20, width 16-128;
                              digits, clusters, spirals, mnist1d, fashion-mnist; 126 runs,
                              seeds 0-4): the most-dead layer up to 0.44 at step 0 and 0.50 /
                              0.41 / 0.34 / 0.29 at the end for widths 16 / 32 / 64 / 128, 25
                              runs above 0.3 (deep, narrow or 2-feature nets; 11 of 74 and 14
                              of 52 were flagged), none with a cure that reliably helped
                              (w16, depth 16, digits: leaky_relu 0.46 -> 0.31, 0.19 -> 0.35,
                              0.49 -> 0.59 val acc). So a layer counts when (a) above 1/2 by
                              ``DEAD_CHANCE_SD`` binomial standard deviations, ``1/2 + 2 *
                              sqrt(1/4 / units)`` (0.75 / 0.68 / 0.625 / 0.59), or (b) its
                              units died in training: the fraction above its own at step 0 by
                              more than ``DEAD_DIEOFF_Z`` standard errors of a difference of
                              two proportions, ``(d - d0) / sqrt(2 p (1 - p) / units)``, ``p =
                              (d + d0) / 2`` (healthy: at most 1.7 in a layer above 0.3, 2.9
                              in any layer; sgd lr 0.5-1, adam lr 0.05, N(0, 1) or N(0, 0.05)
                              weights: 2.7 (also lr_too_high), 3.5, then 4.4 .. 16), or (c)
                              every unit of the layer is dead (it passes no signal), or (d)
                              the hidden layers start with non-zero biases
                              (``biases_nonzero``), for which 1/2 is no bound (biases -1: 48%
                              of a layer at step 0, 52% at the end, val acc at chance). Sick
                              runs: biases -3 0.92-1.0 dead; large steps / N(0, 1) weights
                              0.38-1.0 (0-0.25 at step 0). A layer whose units are not known
                              (no Dense before it) is judged by 0.3 alone
``DEAD_LEARNED_FIT`` 0.5      dead_relu's severity is "low" for units that died in training
                              (not under large updates: no lr_too_high finding) in a net that
                              learned regardless, its probe batch's loss at most 0.5x a
                              constant prediction's (:func:`fitted`); the cure is unchanged.
                              relu/He, 3-5 hidden layers of 16-64, Adam 1e-2 / 3e-2, SGD 0.05
                              with momentum 0.9, 200 and 600 steps, seeds 0-1, on spirals,
                              clusters, digits, mnist1d (46 runs with such a finding): in the
                              19 that learned, the same net with leaky_relu (no dead units)
                              reached a val acc -0.03 .. +0.044 from it (median +0.004): the
                              dead units were not what held them back (lr / 10, a rate's
                              cure, went -0.29 .. +0.094: spirals at Adam 1e-2 0.885 -> 0.605,
                              digits at Adam 3e-2 0.889 -> 0.95, as its verification reports);
                              in the 25 that did not, leaky_relu went -0.12 .. +0.67 (16
                              layers of 16 on digits stuck at chance: 0.10 -> 0.77)
``FORWARD_GROWTH`` 10         residual networks without batch normalization: the activation
                              std of the last hidden layer over the first's at step 0 above
                              10 (100x in variance): each pre-activation block adds its
                              branch's variance to the stream's, so with He-initialized ReLU
                              branches the variance about doubles per block and the logits
                              start large (digits, 12 blocks of 32: 45.9x, a probe loss of 136
                              at step 0, val acc 0.45 after 200 Adam steps; with batch norm
                              1.0x, 2.7, 0.86; 7 blocks: 16x, 0.75 against 0.89); a weight
                              init judgement per layer cannot see it (every layer is He's)
``SATURATION_FRAC`` 0.5       fraction of entries with |f'(s)| < 5% of sup|f'| in a layer at the
                              end of training (bounded activations only)
``SATURATION_FIT`` 0.2        and flagged only when the probe batch's loss ends above
                              ``SATURATION_FIT`` x a constant prediction's (or is not finite,
                              or either is unknown): saturation is a state, the finding claims
                              harm. A net that fits while saturated is left alone (digits,
                              200 steps, 3 seeds, end loss / constant's: residual tanh 12x64,
                              adam / sgd momentum, 0.058-0.073, val acc 0.95-0.97, batch norm
                              did not help; tanh 8x64 on inputs x10 0.11-0.17, 0.89-0.92;
                              sigmoid 3x64 on x10 0.12-0.15, 0.92-0.94; 20-32-32-32-4 tanh on
                              clusters x10 0.010-0.013, val acc 1.0 as unscaled; all 52-99%
                              saturated); sick: sigmoid N(0, 1) 20x64 0.80-0.96, tanh N(0, 1)
                              2.5-4.4, tanh 20x64 on inputs x100 0.21-0.23, tanh lr 2 6.2-8.0
``GRADIENT_DEPTH_SCALES`` 6   vanishing / exploding gradients: with ``R`` the ratio of the std of
``GRADIENT_MIN_RATIO`` 10     dL/ds between the last and the first hidden layer (median over the
                              probed steps, of ``ln R``: with an even number of probes the
                              geometric mean of the middle two) across ``n`` hidden layers, the
                              per-layer factor is
                              ``R^(1/(n-1))`` and the depth scale of the squared gradient is
                              ``xi = (n - 1) / ln(R^2)`` layers; the finding fires when the
                              network is deeper than 6 depth scales (``n / xi > 6``, mean-field
                              theory's trainability limit ``L < 6 xi``, Schoenholz et al. 2017)
                              and ``R >= 10`` (an order of magnitude between the ends); probed
                              steps where the probe batch's loss is below
                              ``GRADIENT_MIN_LOSS`` (1%) of its value at step 0, or of a
                              constant prediction's loss on it when that is smaller, are left
                              out: a fitted network's gradients (1e-12 .. 0) come from the few
                              examples it still gets wrong, their ratio says nothing of depth
                              (an exploding residual net starting at a loss of 126705 is not
                              fitted at 93). Step 0's ratio alone decides when it explodes
                              past both thresholds (the chaotic phase): the first updates,
                              largest in the first layers, saturate or kill them, and later
                              probes' tiny gradients there are that damage (20 tanh layers of
                              64, N(0, 1), sgd 0.01: 1.7e6x larger at step 0, a median of
                              1500x smaller, was 'vanishing', cured by batch norm); no
                              vanishing finding then. With batch normalization both are
                              judged on at least ``GRADIENT_BN_MIN_EXAMPLES`` (20) probe
                              examples: its gradient growth depends on the batch size (Yang
                              et al. 2019), and a few rows' probe batch measures a
                              smaller-batch network than the one trained (15 residual BN
                              blocks of 64, He, step 0: 44.5x on 4 rows, 7.1x on 8, 2.4x on
                              32, 2.0x on 300: a healthy net was 'exploding at
                              initialization' on a 40-row data set's 4 validation rows).
                              The ``n`` positions are ``RunContext.gradient_layers``: the
                              hidden layers of a chain; the torch doctor's stages of a module
                              graph (a residual block's output, layers reading one input
                              pooled, :mod:`depthlab.torch.gradient_path`): a pre-norm SwiGLU
                              decoder read its embedding against the last block's ``w3``,
                              257x, 'exploding', on a healthy model (its blocks' outputs:
                              within 1%).
                              For a layer whose activation takes a normalization's output
                              (``Dense -> BatchNorm -> act``) the doctor gives the rules
                              dL/dxhat = gamma * dL/ds, the gradient before the norm's
                              affine (:data:`NORM_GRAD`): scaling a norm's gamma and beta by
                              c leaves the network's function and dL/dxhat as they were and
                              divides dL/ds by c, so read at s a healthy net's ratio followed
                              its learned gammas (a BatchNorm CNN under SGD momentum 0.9:
                              13.9x, 'exploding'; 6-8x at xhat). With batch norm an
                              exploding finding also needs step 0's ratio past both
                              thresholds: batch norm's own explosion is there at
                              initialization (Yang et al. 2019); a growth that appears only
                              in training is the learned weights', whose scale invariance
                              lowers their effective step (3 conv-BN-ReLU layers: 2.4x at
                              step 0, 10.6x median, val acc 0.98, no cure helped)
``BN_GROWTH_TOL`` 0.1         an exploding finding's growth is batch norm's own (Yang et al.
                              2019, :func:`batchnorm_own_growth`) when the per-layer factor at
                              step 0 of a plain batch-normalized net is within 10% of
                              ``sqrt(E[f'(s)^2] / Var f(s))``, ``s ~ N(0, 1)`` (ReLU 1.2112):
                              16 ReLU + BN layers of 64 at init, 3 seeds: 1.25-1.29 per
                              layer on 20 rows, 1.22-1.24 on 32, 1.21-1.22 on 300; its
                              evidence and message name both, re-initializations are not
                              prescribed (the torch doctor's cures drop them)
``BN_DRIFT`` 0.5              batch-norm running mean off the probe batch's mean by more than
                              0.5 batch std (averaged over units), or mean |log variance ratio|
                              above 0.5 (a factor ~1.65), judged on at least
                              ``BN_DRIFT_MIN_EXAMPLES`` (20) probe examples: the statistics of
                              n examples scatter by ~sqrt(2 / n) on their own (5 examples:
                              0.62 .. 0.74 in healthy batch-normalized nets); or, when larger,
                              ``ln`` of the probe batch's inference-mode loss over its loss
                              with its own batch statistics (floored at 0.1 x its step-0
                              loss) above 0.5 (a factor ~1.65): drifts below 0.25 in each
                              of 20 BN layers compounded to an inference loss of 6.2 at
                              chance against 0.63
``LOGIT_FLOOR`` 0.01          the lowest loss one example can reach when a loss on logits
                              (``cross_entropy``, ``binary_cross_entropy``) follows a bounded
                              ``output_activation`` (softmax, sigmoid, tanh, ...): the values
                              are squashed twice; softmax output, 10 classes: ln(1 + 9/e) =
                              1.46 (digits 64-64-64-10 tanh, sgd 0.01, 200 steps: train loss
                              2.21, val acc 0.42, and a clean bill of health; without it 0.72
                              and 0.86)
``INPUT_SCALE`` 10            unscaled inputs (the training inputs as the network sees them; the
``INPUT_SCALE_LOGITS`` 50     metric is the larger of ``S / limit`` and ``O / 5``, flagged above
``INPUT_OFFSET`` 5            1): ``S`` the largest feature's root mean square ``sqrt(mean^2 +
                              std^2)`` (standardized features: 1; images in 0..255: ~200), its
                              limit 10 under a regression loss (mse, huber: the predictions
                              must match the targets' scale, and a ReLU net's outputs grow with
                              its inputs) and 50 under a loss on logits (cross_entropy,
                              binary_cross_entropy: larger logits are only more confident);
                              ``O`` the features' mean vector over their spread, ``sqrt(sum
                              mean_j^2 / sum std_j^2)`` (the constant part of every input over
                              the part that differs between examples; digits in 0..1: 1.5).
                              Scanned (64-64-64-10 digits and 3-16-16-1 regression, sgd 0.01 /
                              adam 1e-3, 200 steps, raw against standardized): regression
                              features of std 10 diverged (sgd) or ended at a loss of 0.45
                              against 0.038 (adam), with no finding; std 3: 0.075 against
                              0.038. Digits x 120 (S 97): val acc 0.53 / 0.83 (sgd / adam, relu)
                              against 0.82 / 0.93 standardized, x 255: chance; x 10 .. 60 (S 8 ..
                              48) trained as well as standardized with sgd (larger inputs act as
                              a larger learning rate; adam: 0.85 .. 0.88 against 0.93), and so
                              did 20-feature clusters x 10. Digits + 2 (O 8.6): 0.37 / 0.31
                              (relu / tanh) against 0.82 / 0.86; + 1 (O 4.9): 0.64, as raw
                              digits (0.66); regression N(5, 1) features (O 5): loss 0.19
                              against 0.066; 0/1 features that are 1 on 99% of rows (O 10.4):
                              0.85 against 0.97. Not flagged: one-hot and 0/1 features (S <= 1,
                              O <= 3 up to a 90% share of ones), images in 0..1, any
                              standardized data (metric 0.1 or 0.02)
``TARGET_SCALE`` 10           unscaled regression targets (mse, huber; not one-hot rows): the
``TARGET_OFFSET`` 2           metric is the larger of ``S / 10`` and ``O / 2`` over the
``TARGET_FIT`` 0.2            training targets' columns as for the inputs, flagged above 1 when
                              the probe batch's loss ends above ``TARGET_FIT`` x a constant
                              prediction's (a net that fits them anyway is left alone; the
                              probe batch is held out: huber, offset 3, sgd 0.05 ended at
                              0.033 on the training rows and 0.12x on the probe batch).
                              Scanned (5-32-32-1 relu He, 300 steps, a smooth function of 5
                              N(0, 1) features, the final train loss over the targets' variance,
                              raw against standardized 0.097 sgd 0.01 / 0.084 adam 1e-3):
                              scale 3: 0.067 / 0.093; 10: 0.071 / 0.19; 15: 0.051 / 0.25; 30:
                              0.69 / 0.37; 100: diverged / 0.59; offset (mean / std) 2: 0.14 /
                              0.29; 3: 0.15 / 0.58; 5: 0.15 / 1.5; 20: 0.91 / 23
``MEAN_SHIFT`` 0.25           |mean activation| at the end, for activations with f(0) != 0
                              (sigmoid) in networks with at least ``MEAN_SHIFT_MIN_LAYERS`` (4)
                              hidden layers and no batch normalization
``MEAN_SHIFT_FIT`` 0.2        and flagged only when the probe batch's loss ends above
                              ``MEAN_SHIFT_FIT`` x a constant prediction's (or either is
                              unknown), as saturation: a sigmoid's mean output is about 0.5
                              whatever the net does, so the state alone flagged every sigmoid
                              net (digits, 200 steps, 4/8 sigmoid layers of 64, Glorot / 16x
                              Glorot / N(0, 1), Adam 1e-2 / 1e-3, SGD 0.5 / 0.1: the 5 of 24
                              that ended at 0.08-0.15x a constant's loss, val acc 0.89-0.94,
                              4 of them at Adam 1e-2 where the tanh cure did not help, 0.93 ->
                              0.90; the 19 others ended at 0.22-1.02x, the cure helped 18)
============================  ================================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..initializers import weight_variance
from ..layers.dropout import AlphaDropout, Dropout
from ..network import Network
from ..probes.histograms import activation_range
from ..training.history import History
from . import prescriptions as rx
from .findings import Finding

DIVERGENCE_RISE = 1.5
DIVERGENCE_FLOOR = 0.1
UPDATE_RATIO_HIGH = 0.1
SHIFTED_FRAC = 0.9
EARLY_UPDATE_STEPS = 10
LR_STEP_FALL = 0.01
UPDATE_RATIO_ROSE = 0.03
LOSS_ROSE = 1.1
LR_FIT = 0.05
LR_FIT_TAIL = 0.25
LR_SHORTFALL = 1.0
CHANCE_ABOVE = 10.0
LR_LOW_FIT = 0.5
PENALTY_SHRINK = 4.0
PENALTY_DOMINANCE = 5.0
PENALTY_ACTING = 1.25
UPDATE_RATIO_HEALTHY = 1e-3
INIT_MISMATCH = 4.0
INIT_MIN_WEIGHTS = 20
INIT_MISMATCH_SD = 2.0
INIT_MISMATCH_FIT = 0.2
DROPOUT_NOISE = 1.0
DROPOUT_TINY_STEPS = 3.0
DEAD_FRAC = 0.3
DEAD_MIN_EXAMPLES = 10
DEAD_CHANCE_SD = 2.0
DEAD_DIEOFF_Z = 3.0
DEAD_LEARNED_FIT = 0.5
SATURATION_FRAC = 0.5
SATURATION_FIT = 0.2
FORWARD_GROWTH = 10.0
GRADIENT_DEPTH_SCALES = 6.0
GRADIENT_MIN_RATIO = 10.0
GRADIENT_MIN_LOSS = 0.01
GRADIENT_BN_MIN_EXAMPLES = 20
BN_DRIFT = 0.5
BN_DRIFT_MIN_EXAMPLES = 20
MEAN_SHIFT = 0.25
MEAN_SHIFT_MIN_LAYERS = 4
MEAN_SHIFT_FIT = 0.2
LOGIT_FLOOR = 0.01
INPUT_SCALE = 10.0
INPUT_SCALE_LOGITS = 50.0
INPUT_OFFSET = 5.0
TARGET_SCALE = 10.0
TARGET_OFFSET = 2.0
TARGET_FIT = 0.2


NORM_GRAD = "grad_norm_std"
"""The doctors' own probe rows (never stored): per layer whose activation takes a
normalization's output, the std of dL/dxhat = gamma * dL/dy at that norm (``y = gamma * xhat +
beta``; gamma 1 without an affine), which the gradient rules read in place of
``grad_pre_std`` (:func:`norm_gradient_frame`). dL/dxhat does not change when the norm's
gamma and beta are scaled together, which leaves the network's function as it was (the next
norm divides the scale out) and divides dL/dy by it."""


def norm_gradient_frame(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(frame the rules read, table kept)``: the probe table without its :data:`NORM_GRAD`
    rows (kept, stored), and for the rules each such layer's ``grad_pre_std`` replaced by its
    :data:`NORM_GRAD` value at the same step."""
    if not len(table) or "quantity" not in table.columns:
        return table, table
    extra = table["quantity"] == NORM_GRAD
    if not extra.any():
        return table, table
    kept = table[~extra].reset_index(drop=True)
    by = table[extra].set_index(["step", "layer"])["value"]
    by = by[~by.index.duplicated(keep="last")]
    rules = kept.copy()
    g = rules["quantity"] == "grad_pre_std"
    at = pd.MultiIndex.from_frame(rules.loc[g, ["step", "layer"]])
    has = at.isin(by.index)
    values = rules.loc[g, "value"].to_numpy(copy=True)
    values[has] = by.reindex(at[has]).to_numpy()
    rules.loc[g, "value"] = values
    return rules, kept


def activation_name(configured: Any, fn: Any = None) -> str:
    """The registered name the rules and prescriptions know an activation by: a configured
    name as the registry spells it (``"silu"`` -> ``"swish"``), an activation object's
    ``name`` (``dl.mlp(sizes, Tanh())`` records the object, whose ``str`` is ``"Tanh()"``: no
    initializer was recommended for it, so a tanh net with N(0, 1) weights got batch norm
    instead of its init_mismatch finding), else the probed nonlinearity's (``fn``)."""
    from ..activations import REGISTRY as ACTIVATIONS

    if isinstance(configured, str) and configured:
        try:
            return ACTIVATIONS.key(configured)
        except (ValueError, TypeError):
            return configured
    name = getattr(configured, "name", None)
    if configured is not None and isinstance(name, str) and name:
        return name
    return fn.name if fn is not None else ""


@dataclass
class RunContext:
    """Everything a rule may read about one probed run."""

    net: Network
    config: dict[str, Any]
    settings: dict[str, Any]
    frame: pd.DataFrame
    history: History
    metrics: dict[str, float]
    bn_drift: list[dict[str, float]] = field(default_factory=list)
    probe_examples: int | None = None  # rows of the probe batch (None: not known)
    # the probe batch's loss with batch statistics and in inference mode (batch norm only)
    bn_losses: dict[str, float] = field(default_factory=dict)
    # the probe batch's loss under the best constant prediction (NaN: not known)
    chance_loss: float = math.nan
    # per-feature ``mean`` and ``std`` (float64) of the training inputs as the network sees
    # them (standardized when the run standardizes); empty: not known (the torch doctor)
    input_stats: dict[str, Any] = field(default_factory=dict)
    # per-column ``mean`` and ``std`` (float64) of the training targets as the network is
    # trained on them, for a regression loss (mse, huber) on targets that are not one-hot
    # rows; empty: not a regression, or not known (the torch doctor)
    target_stats: dict[str, Any] = field(default_factory=dict)
    # ||dW|| / ||W|| of the hidden layers at the first updates that were not probed (at most
    # EARLY_UPDATE_STEPS), indexed by (step, layer) as the probe table's update_ratio; None:
    # not measured
    early_update_ratios: pd.Series | None = None

    def __post_init__(self) -> None:
        f = self.frame
        self.table = (f.pivot_table(index=["step", "layer"], columns="quantity", values="value",
                                    aggfunc="last", dropna=False)
                      if len(f) else pd.DataFrame())
        self.points = self.net.probe_points()
        self.hidden = [p.index for p in self.points]
        self.steps = sorted(set(f["step"])) if len(f) else []
        self.fn = self.points[0].activation.fn if self.points else None
        self.activation = activation_name(self.config.get("activation"), self.fn)

    def layer_activation(self, index: int) -> str:
        """The activation of hidden layer ``index`` by its registered name: the network's
        (:attr:`activation`) unless its hidden layers use several (a hand-built
        ``dl.Network`` of tanh, relu and sigmoid layers was described as all tanh: "2 of 3
        hidden tanh layers are saturated", "layer 2 is 158x the glorot_uniform variance
        recommended for tanh units" of a relu layer), then that layer's own."""
        names = self.__dict__.get("_layer_activations")
        if names is None:  # once per context: the rules ask per layer
            names = {}
            for p in self.points:  # a torch model's points carry their module's name
                act = getattr(p, "activation", None)
                name = getattr(p, "activation_name", None) or getattr(p, "recurrent", None) \
                    or (activation_name(None, act.fn) if getattr(act, "fn", None) is not None
                        else "")
                if name:
                    names[p.index] = name
            if len(set(names.values())) < 2:
                names = {}  # one activation: the network's name for it (configured spelling)
            self.__dict__["_layer_activations"] = names
        return names.get(index, self.activation)

    def several_activations(self) -> dict[int, str]:
        """Each hidden layer's activation (:meth:`layer_activation`) when the network's hidden
        layers use several, else ``{}``: the cures that re-initialize then prescribe each
        layer's own initializer (:func:`~depthlab.diagnosis.prescriptions.per_layer_init`)."""
        acts = {p.index: self.layer_activation(p.index) for p in self.points}
        return acts if rx.several(acts) else {}

    @property
    def end(self) -> int:
        return self.steps[-1] if self.steps else 0

    def bypass(self, index: int) -> str | None:
        """What carries the signal around hidden layer ``index``: ``""`` when every path from
        the input to the output passes through it (a layer off for every example then leaves
        the output constant), ``"a residual skip connection"`` for a layer inside a residual
        block's branch (``y = x + F(x)``: with ``F`` constant the block still passes ``x``
        on), None when not known."""
        from ..layers import Residual, Sequential

        point = next((p for p in self.points if p.index == index), None)
        if point is None or not isinstance(self.net, Sequential):
            return None

        def branch_leaves(layer: Any, inside: bool) -> Any:
            if isinstance(layer, Residual):
                yield from ((leaf, True) for leaf in layer.leaves())
            elif isinstance(layer, Sequential):
                for child in layer.layers:
                    yield from branch_leaves(child, inside)
            else:
                yield layer, inside

        for leaf, inside in branch_leaves(self.net, False):
            if leaf is point.activation:
                return "a residual skip connection" if inside else ""
        return None

    @property
    def gradient_layers(self) -> list[int]:
        """The positions, in series from the input, at which the vanishing and exploding
        rules read the gradient (their depth is these positions' count): the hidden layers of
        a chain. The torch doctor's view of a model that is not a chain groups a residual
        block, or layers run in parallel on one input, into one position
        (:mod:`depthlab.torch.gradient_path`)."""
        return self.hidden

    @property
    def gradient_depth(self) -> int:
        """The ``n`` of the depth readings: the number of steps along :attr:`gradient_layers`
        (their count; the torch doctor counts a layer applied ``k`` times per forward, weight
        sharing, as ``k``)."""
        return len(self.gradient_layers)

    def gradient_depth_note(self) -> str:
        """Words after "the n hidden layers" naming what :attr:`gradient_depth` counts more
        than once ("" here: every position is one step)."""
        return ""

    def gradient_scales(self, ratio: float, vanishing: bool) -> tuple[float, float]:
        """``(factor per step, depth in depth scales)`` of the first/last gradient-std
        ``ratio`` (>= 1: smaller at the first position when ``vanishing``, else larger):
        :func:`gradient_depth_scales` over :attr:`gradient_depth` steps."""
        return gradient_depth_scales(ratio, self.gradient_depth)

    def gradient_stds(self, step: int) -> pd.Series:
        """The gradient std at each of :attr:`gradient_layers` at ``step`` (index: position):
        ``grad_pre_std``, std(dL/ds) at the layer's pre-activation."""
        return self.at(step, "grad_pre_std")

    def gradient_where(self, position: int) -> str:
        """The words a finding names a position of :attr:`gradient_layers` by."""
        return f"layer {position}"

    def gradient_members(self, position: int) -> list[int]:
        """The hidden layers a position of :attr:`gradient_layers` stands for."""
        return [position]

    gradient_unit = "layer"
    """What one position of :attr:`gradient_layers` is called in the messages."""

    def at(self, step: int, quantity: str) -> pd.Series:
        """Per-hidden-layer values of ``quantity`` at ``step`` (index: layer)."""
        if self.table.empty or quantity not in self.table.columns:
            return pd.Series(dtype=float)
        try:
            s = self.table.loc[step, quantity]
        except KeyError:
            return pd.Series(dtype=float)
        return s[s.index >= 1]

    def init_variance_ratios(self, activation: str | None = None) -> dict[int, float]:
        """Measured initial Var(W) (``weight_std`` at step 0 squared) / the variance of the
        initializer recommended for ``activation``, per hidden layer."""
        w = self.at(0, "weight_std")
        # (no layer's activation with a recommended init; a first step layer's had none and
        # left a step -> relu -> tanh net's other layers unjudged)
        if w.empty or not any(rx.recommended_init(activation or self.layer_activation(p.index))
                              for p in self.points):
            return {}
        out = {}
        for p in self.points:  # each layer against its own activation's (layer_activation)
            rec = rx.recommended_init(activation or self.layer_activation(p.index))
            if rec is None or p.dense is None or p.index not in w.index:
                continue
            out[p.index] = init_ratio(rec, float(w[p.index]) ** 2, p.dense.fan_in,
                                      p.dense.fan_out)
        return out

    def judged_init_ratios(self, activation: str | None = None) -> dict[int, float]:
        """:meth:`init_variance_ratios` of the layers whose weights can tell: a finite ratio
        from at least ``INIT_MIN_WEIGHTS`` weights (:func:`weight_count`; a sample variance of
        fewer scatters by factors), a ratio 0 (all weights equal) in a layer of >= 2 units."""
        fans = {p.index: (weight_count(p.dense), p.dense.fan_out) for p in self.points
                if p.dense is not None}
        return {k: v for k, v in self.init_variance_ratios(activation).items()
                if v >= 0 and math.isfinite(v) and k in fans
                and (fans[k][0] >= INIT_MIN_WEIGHTS or (v == 0 and fans[k][1] >= 2))}

    def mean_init_ratio(self, activation: str | None = None) -> float:
        """Geometric mean of :meth:`init_variance_ratios` (NaN when unknown), ``(prod r)^(1/n)``:
        0 when a layer's weights are all equal (zeros or constant init; it was NaN when every
        layer's were, so the cures that repair a too-small init did not apply)."""
        r = list(self.judged_init_ratios(activation).values())
        if any(v == 0 for v in r):
            return 0.0
        return float(np.exp(np.mean(np.log(r)))) if r else math.nan


def weight_count(dense: Any) -> int:
    """The number of weights whose sample variance a layer's init ratio is read from: the
    layer's own count where it gives one (``n_weights``: a torch convolution's ``cin x cout x
    k^2``), else ``fan_in x fan_out`` (a Dense's matrix; a convolution's fans, ``cin k^2`` and
    ``cout k^2``, would count its weights k^2 times)."""
    n = getattr(dense, "n_weights", None)
    return int(n) if n else int(dense.fan_in) * int(dense.fan_out)


def init_ratio(rec: str, variance: float, fan_in: int, fan_out: int) -> float:
    """``variance`` (a layer's initial Var(W)) / the variance of the recommended initializer
    ``rec`` for a (fan_in, fan_out) layer. He and LeCun initializations preserve the forward
    variance with 1/fan_in or the back-propagated one with 1/fan_out, and either keeps a deep
    network trainable (He et al. 2015, sec. 2.2; ``torch.nn.init.kaiming_normal_(...,
    mode="fan_out")``, torchvision's ResNet): a variance between the two modes' is 1, one
    outside both is divided by the nearer one. It was judged against the fan_in mode's alone: a
    fan_out-mode He init of a first convolution with fan_in 9, fan_out 144 read as 0.0625x He,
    an init mismatch on a healthy CNN. The two modes are the initializer's variance for a square
    layer of ``fan_in`` and of ``fan_out`` units, ``a = v(fan_in, fan_in)``, ``b = v(fan_out,
    fan_out)`` (He: 2/fan_in, 2/fan_out); for Glorot's fan_avg these are Glorot & Bengio's own
    forward and backward conditions, ``fan_in Var(W) = 1`` and ``fan_out Var(W) = 1``, whose
    compromise ``2 / (fan_in + fan_out)`` lies between them (it was the only one accepted:
    LeCun's 1/fan_in, the forward condition, read as 8.5x Glorot's in a 16 -> 256 tanh layer of a
    net that trained to val acc 0.92 against Glorot's 0.78)."""
    a = weight_variance(rec, fan_in, fan_in)
    b = weight_variance(rec, fan_out, fan_out)
    lo, hi = min(a, b), max(a, b)
    if not lo > 0 or math.isnan(variance):
        return math.nan
    if variance > hi:
        return variance / hi
    return variance / lo if variance < lo else 1.0


RuleResult = tuple[float, Finding | None]


def _count(n: int, word: str) -> str:
    """``1 step``, ``2 steps``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _severity(metric: float, threshold: float, log: bool = True) -> str:
    if not math.isfinite(metric):
        return "high"
    x = metric / threshold
    if log:
        return "high" if x >= 100 else "medium" if x >= 10 else "low"
    return "high" if x >= 1.6 else "medium" if x >= 1.2 else "low"


def _gradient_steps(ctx: RunContext) -> list[int]:
    """The probed steps whose gradients tell of the network's depth: step 0 and those where
    the probe batch's loss (layer 0 of the probe table, when recorded) is still at least
    ``GRADIENT_MIN_LOSS`` of its value at step 0 or of a constant prediction's
    (``ctx.chance_loss``), whichever is smaller (or not finite: a diverging run). Step 0's
    alone was the reference: a 31-block residual net without batch norm starts at a loss of
    126705, and its probes at losses of 1037 .. 72 (chance: 2.3) were left out as fitted."""
    t = ctx.table
    if t.empty or "loss" not in t.columns or not ctx.steps:
        return list(ctx.steps)
    try:
        loss = t["loss"].xs(0, level="layer")
    except KeyError:
        return list(ctx.steps)
    start = float(loss.get(ctx.steps[0], math.nan))
    if not (math.isfinite(start) and start > 0):
        return list(ctx.steps)
    chance = ctx.chance_loss
    ref = min(start, chance) if isinstance(chance, float) and math.isfinite(chance) and \
        chance > 0 else start
    keep = []
    for step in ctx.steps:
        v = float(loss.get(step, math.nan))
        if step == ctx.steps[0] or not math.isfinite(v) or v >= GRADIENT_MIN_LOSS * ref:
            keep.append(step)
    return keep


def _step_ratios(ctx: RunContext) -> list[tuple[int, float]]:
    """``(step, ratio)``: std(dL/ds) last hidden / first hidden at each probed step of
    :func:`_gradient_steps` whose two gradients are both finite and > 0. A first-layer
    gradient of exactly 0 under a layer with a non-zero one (:func:`_lowest_gradient`) stands
    for a vanishing gradient that underflowed the float type: the ratio is then taken from the
    lowest layer with a non-zero gradient, a lower bound (70 float32 sigmoid layers, Glorot:
    layers 1-2 read 0, layer 3 1.2e-45, the last 2.5e-4; those probes were skipped and the
    doctor found no vanishing gradients)."""
    path = ctx.gradient_layers
    if len(path) < 2:
        return []
    first, last = path[0], path[-1]
    out = []
    for t in _gradient_steps(ctx):
        g = ctx.gradient_stds(t)
        if first in g.index and last in g.index:
            a, b = _lowest_gradient(g, path)[0], float(g[last])
            if math.isfinite(a) and math.isfinite(b) and a > 0 and b > 0:
                out.append((t, b / a))
    return out


def _lowest_gradient(g: pd.Series, hidden: list[int]) -> tuple[float, int]:
    """``(std, layer)``: the first hidden layer's gradient std, or, where it is exactly 0 or
    not finite, that of the lowest layer below the last whose std is finite and > 0, every
    layer under it reading the same (all 0: the gradient fell below the float type's smallest
    number on its way down; all inf or NaN: it overflowed the type's largest)."""
    a = float(g.get(hidden[0], math.nan))
    if a == 0.0 or not math.isfinite(a):
        under = a == 0.0
        for i in hidden[1:-1]:
            v = float(g.get(i, math.nan))
            if math.isfinite(v) and v > 0:
                return v, int(i)
            if (v == 0.0) != under:  # 0 above inf or the reverse: no one under/overflow
                break
    return a, int(hidden[0])


def _out_of_range_note(ctx: RunContext, steps: list[int]) -> str:
    """The message's words for a ratio that is a lower bound (:func:`_lowest_gradient` had to
    step up from the first layer at one of ``steps``), else ``""``."""
    path = ctx.gradient_layers
    first = path[0]
    stepped = [(t, _lowest_gradient(ctx.gradient_stds(t), path)[1]) for t in steps]
    stepped = [(t, i) for t, i in stepped if i != first]
    if not stepped:
        return ""
    dtype = getattr(ctx.net, "dtype", None)
    try:
        kind = np.dtype(dtype).name if dtype is not None else "the network's float type"
    except TypeError:
        kind = "the network's float type"
    under = float(ctx.gradient_stds(stepped[0][0]).get(first, math.nan)) == 0.0
    what = ("is 0 in {} (below its smallest number)" if under else
            "is not finite in {} (it overflowed)").format(kind)
    return (f"; at least: the gradient at {ctx.gradient_where(first)} {what}, so the ratio is "
            f"taken from {ctx.gradient_where(max(i for _, i in stepped))}, the lowest with a "
            "finite non-zero one")


def _middle(n: int) -> str:
    """What a median of the logs of ``n`` numbers is, where it is not one of them."""
    if n == 2:
        return ", their geometric mean"
    return ", the geometric mean of the middle two" if n % 2 == 0 else ""


def gradient_depth_scales(ratio: float, n_hidden: int) -> tuple[float, float]:
    """``(per-layer factor, depth in depth scales)`` of a first/last gradient-std ratio
    ``ratio`` (>= 1) across ``n_hidden`` hidden layers: the factor is
    ``ratio^(1/(n_hidden - 1))`` and the squared gradient's depth scale is
    ``xi = (n_hidden - 1) / ln(ratio^2)``, so the depth is ``n_hidden / xi`` scales."""
    if n_hidden < 2 or not ratio > 0 or not math.isfinite(ratio):
        return math.nan, math.nan
    per_layer = ratio ** (1.0 / (n_hidden - 1))
    return per_layer, 2.0 * n_hidden * math.log(ratio) / (n_hidden - 1)


def _explosion_at_init(ctx: RunContext, pairs: list[tuple[int, float]]) -> float:
    """The first/last gradient-std ratio at step 0 when it alone crosses both thresholds
    growing towards the input (``GRADIENT_DEPTH_SCALES`` and ``GRADIENT_MIN_RATIO``), else NaN.
    Such a network starts in the chaotic phase (Schoenholz et al. 2017: the gradient grows by
    chi1 > 1 per layer at initialization); its first updates, the learning rate times these
    gradients, are largest in the first layers and push them into the flat tails of a bounded
    activation (or off, for ReLU), after which the same layers' gradients are tiny: the later
    probes measure the damage, not the cause (20 tanh layers of 64, N(0, 1) init, sgd 0.01:
    1.7e6x larger at step 0, then a median of 1500x smaller)."""
    if not pairs or not ctx.steps or pairs[0][0] != ctx.steps[0]:
        return math.nan
    ratio = 1.0 / pairs[0][1]
    _, metric = ctx.gradient_scales(ratio, vanishing=False)
    if metric > GRADIENT_DEPTH_SCALES and ratio >= GRADIENT_MIN_RATIO:
        return ratio
    return math.nan


def _explodes(ratio: float, n_hidden: int) -> bool:
    """Whether a first/last gradient-std ``ratio`` across ``n_hidden`` hidden layers crosses
    both thresholds (``GRADIENT_DEPTH_SCALES`` and ``GRADIENT_MIN_RATIO``)."""
    _, metric = gradient_depth_scales(ratio, n_hidden)
    return bool(metric > GRADIENT_DEPTH_SCALES and ratio >= GRADIENT_MIN_RATIO)


BN_GROWTH_TOL = 0.1  # |measured / predicted - 1| of batch norm's own per-layer growth


def batchnorm_own_growth(ctx: RunContext, pairs: list[tuple[int, float]]
                         ) -> dict[str, float] | None:
    """Batch norm's own gradient explosion at initialization (Yang et al. 2019): in a plain
    (non-residual) ``Dense -> BatchNorm -> f`` stack the gradient grows towards the input by
    ``lambda = sqrt(E[f'(s)^2] / Var f(s))``, ``s ~ N(0, 1)``, per layer
    (:func:`depthlab.theory.batchnorm.bn_gradient_factor`; ReLU ``sqrt(pi / (pi - 1)) =
    1.2112``), whatever the initial weights (batch norm divides their scale out). Returns
    ``{"bn_growth_predicted": lambda, "bn_growth_measured": m, "bn_growth_tolerance":
    BN_GROWTH_TOL, "bn_growth_trained": 0/1}`` when the network is batch-normalized (a
    BatchNorm, not another norm), not residual, the first ratio is step 0's ``r0`` and its
    per-layer factor ``m = r0^(1/(n-1))`` is within ``BN_GROWTH_TOL`` (relative) of ``lambda``
    (a 16-layer ReLU + BN MLP, He, digits: 19.7x, 1.22 per layer, val acc 0.96; a probe
    batch of 20 rows: 1.25-1.29, finite batches explode a little faster);
    ``bn_growth_trained`` is 1 when the probe batch's loss ended at or below ``SATURATION_FIT``
    of a constant prediction's. None otherwise."""
    config = ctx.config
    norm = config.get("normalization")
    if (not config.get("batchnorm") or config.get("residual") or not pairs
            or pairs[0][0] != 0 or (norm is not None and "BatchNorm" not in str(norm))):
        return None
    n = ctx.gradient_depth
    r0 = 1.0 / pairs[0][1]
    if n < 2 or not (math.isfinite(r0) and r0 > 1.0):
        return None
    from ..theory.batchnorm import bn_gradient_factor

    try:
        predicted = bn_gradient_factor(ctx.activation,
                                       **(config.get("activation_kwargs") or {})).growth
    except (ValueError, KeyError, TypeError):
        return None
    measured = r0 ** (1.0 / (n - 1))
    if not (math.isfinite(predicted) and abs(measured / predicted - 1.0) <= BN_GROWTH_TOL):
        return None
    end, chance = probe_loss_ends(ctx)[1], ctx.chance_loss
    trained = (math.isfinite(end) and math.isfinite(chance) and chance > 0
               and end <= SATURATION_FIT * chance)
    return {"bn_growth_predicted": predicted, "bn_growth_measured": measured,
            "bn_growth_tolerance": BN_GROWTH_TOL, "bn_growth_trained": float(trained)}


def _batchnorm_growth_note(ctx: RunContext, bn: dict[str, float] | None) -> str:
    """The exploding finding's words for :func:`batchnorm_own_growth` (``""`` for None)."""
    if bn is None:
        return ""
    end, chance = probe_loss_ends(ctx)[1], ctx.chance_loss
    acc = ctx.metrics.get("val_acc", math.nan) if isinstance(ctx.metrics, dict) else math.nan
    acc_words = (f", validation accuracy {acc:.3g}" if isinstance(acc, (int, float))
                 and math.isfinite(acc) else "")
    trained = (f" The network trained nonetheless (probe loss {end:.3g} at the end against a "
               f"constant prediction's {chance:.3g}{acc_words}): the growth is batch norm's at "
               "initialization, not a fault of the weights." if bn["bn_growth_trained"] else "")
    return (f" This is batch norm's own growth at initialization (Yang et al. 2019): "
            f"{bn['bn_growth_predicted']:.4g} per layer predicted for {ctx.activation} "
            f"behind batch norm, {bn['bn_growth_measured']:.4g} measured at step 0 (within "
            f"{100 * BN_GROWTH_TOL:g}%); batch norm divides the weights' scale out, so no "
            f"re-initialization changes it.{trained}")


def biases_nonzero(config: dict[str, Any]) -> bool:
    """Whether the network's hidden layers start with non-zero biases: the torch doctor's
    ``config["biases"]`` (``"nonzero"``/``"zeros"``, read off the model), else a NumPy config's
    ``bias_init`` (none with batch normalization: its Dense layers have no bias)."""
    if "biases" in config:
        return config["biases"] == "nonzero"
    return not config.get("batchnorm") and not rx._zero_biases(config.get("bias_init", "zeros"))


def _shifted_off(ctx: RunContext, layers: list[int]) -> dict[str, float] | None:
    """For vanishing ``layers`` of a ReLU-family activation (``inactive_frac`` measured): their
    median share of entries on the flat side (``s <= 0``) at step 0, their median pre-activation
    mean and std there, when that share is above ``SHIFTED_FRAC``, the mean below 0 and the
    biases not zero (the biases push the units off: leaky_relu or elu with biases at -5 have
    every entry at slope 0.01 or exp(-5), 23x smaller gradients per layer, no batch norm
    needed: zero biases train them to 0.04 / 0.02); else None."""
    if not layers or not biases_nonzero(ctx.config):
        return None
    off, mean, std = (ctx.at(0, q).reindex(layers).dropna()
                      for q in ("inactive_frac", "pre_mean", "pre_std"))
    if off.empty or mean.empty:
        return None
    share, m = float(off.median()), float(mean.median())
    if not (share > SHIFTED_FRAC and m < 0):
        return None
    return {"inactive": share, "pre_mean": m,
            "pre_std": float(std.median()) if not std.empty else math.nan}


def _relative_log_gradients(ctx: RunContext, steps: list[int]) -> dict[int, float]:
    """Per hidden layer ``i``: ``median over steps of ln(g_i(t) / g_last(t))``, ``g`` the
    std of dL/ds at probed step ``t`` (0 where a layer got no gradient; ``+inf`` where it is not
    finite under the lowest finite one, :func:`_lowest_gradient`: it overflowed), over the ``steps``
    whose last-layer gradient is finite and > 0: the statistic of the vanishing and exploding
    rules' headline ratio, layer by layer. Comparing each layer's median raw std with the last
    layer's instead let the step of the largest gradients decide (6 tanh layers at Adam lr 0.5,
    step 0 even, step 15 layer 1 6.9e4x below layer 6: 'layer 1 is 354x smaller than layer
    6', with no layer listed). A layer is listed past a factor of ``GRADIENT_MIN_RATIO``."""
    logs: dict[int, list[float]] = {}
    path = ctx.gradient_layers
    for t in steps:
        g = ctx.gradient_stds(t)
        ref = float(g.get(path[-1], math.nan))
        if not (math.isfinite(ref) and ref > 0):
            continue
        low = _lowest_gradient(g, path)[1]  # the layers under it overflowed: +inf
        for i in path:
            v = float(g.get(i, math.nan))
            if math.isfinite(v) and v >= 0:
                logs.setdefault(int(i), []).append(math.log(v / ref) if v > 0 else -math.inf)
            elif i < low:
                logs.setdefault(int(i), []).append(math.inf)
    return {i: float(np.median(v)) for i, v in logs.items()}


def _gradient_flow(ctx: RunContext, vanishing: bool) -> RuleResult:
    """Shared body of the vanishing and exploding rules (see GRADIENT_DEPTH_SCALES).

    The median over the probes decides, except when the gradients explode past both
    thresholds at initialization (:func:`_explosion_at_init`): that network's gradients
    explode, whatever its wrecked layers' gradients do later (no vanishing finding)."""
    pairs = _step_ratios(ctx)
    ratios = [r if vanishing else 1.0 / r for _, r in pairs]
    if not ratios:
        return math.nan, None
    # the median of the logs: with an even number of probes the geometric mean of the middle
    # two (their arithmetic mean made [1.05, 4.2e6] a ratio of 2.1e6, half the larger probe)
    ratio = float(np.exp(np.median(np.log(ratios))))
    path = ctx.gradient_layers
    n = ctx.gradient_depth
    per_layer, metric = ctx.gradient_scales(ratio, vanishing)
    if (ctx.config.get("batchnorm") and ctx.probe_examples is not None
            and ctx.probe_examples < GRADIENT_BN_MIN_EXAMPLES):
        # batch norm's gradient growth depends on the batch it normalizes (Yang et al. 2019:
        # smaller batches explode faster): a probe batch of a few rows measures that batch's
        # network, not the trained one (15 residual BN blocks of 64, He, digits, step 0:
        # 44.5x on 4 probe rows, 7.1x on 8, 2.4x on 32, 2.0x on 300)
        return metric, None
    explosion = _explosion_at_init(ctx, pairs)
    crosses = metric > GRADIENT_DEPTH_SCALES and ratio >= GRADIENT_MIN_RATIO
    at_init = False
    if vanishing and math.isfinite(explosion):
        return metric, None
    if not vanishing and not crosses and math.isfinite(explosion):
        # the median does not say it, step 0 does: judged at initialization
        at_init, median_ratio, ratio = True, ratio, explosion
        per_layer, metric = ctx.gradient_scales(ratio, vanishing)
    elif not crosses:
        return metric, None
    elif vanishing and not _vanishing_at(ctx, pairs[0][1]) \
            and rule_penalty_too_strong(ctx)[1] is not None:
        # gradients that vanished in training while an over-strong penalty drove the weights
        # towards 0 (each layer's dL/ds shrinks by f'(s) ||W|| on the way down): the penalty's
        # symptom, whose cure is the weaker penalty, not batch norm (sgd weight_decay 5 at lr
        # 0.05, 5-16-16-3 tanh: 1.4x at initialization, 2.3e9x at the end; batch norm "did
        # not help"), as lr_too_high and dead_relu defer to it
        return metric, None
    elif not vanishing and ctx.config.get("batchnorm") and not _explodes(1.0 / pairs[0][1], n):
        # normalized layers: batch norm's own explosion is a property of depth, there at
        # initialization (Yang et al. 2019); a growth that appears only in training is the
        # learned weights' (their scale-invariance lowers the effective step of a layer whose
        # gradient grows, Arora et al. 2019): 3 conv-BN-ReLU layers on digits, SGD momentum,
        # 2.4x at step 0, a median of 10.6x, train loss 0.009, val acc 0.98, no cure helped.
        # (The first probe with finite non-zero gradients at both ends stands for step 0 when
        # step 0 has none, e.g. a zero-initialized output layer.)
        return metric, None
    first, last = path[0], path[-1]
    # the layers over the steps the ratio came from: a step whose gradients are all 0 (every
    # unit dead) made the last layer's median 0, and no layer was below a tenth of it
    steps = [pairs[0][0]] if at_init else [t for t, _ in pairs]
    rel = _relative_log_gradients(ctx, steps)
    bound = math.log(GRADIENT_MIN_RATIO)
    sign = -1.0 if vanishing else 1.0
    layers = sorted({int(k) for i in path if sign * rel.get(int(i), math.nan) > bound
                     for k in ctx.gradient_members(int(i))})
    if vanishing and _zero_init_above(ctx, layers, max(ctx.gradient_members(int(last)))):
        return metric, None
    init_ratio = ctx.mean_init_ratio()
    mixed = ctx.several_activations()  # several: each layer's own init (per_layer_init)
    if vanishing:
        changes, text = rx.for_vanishing(ctx.activation, init_ratio, ctx.config, layers=mixed)
    else:
        changes, text = rx.for_exploding(ctx.activation, init_ratio, ctx.config, layers=mixed,
                                         ratios=ctx.judged_init_ratios() if mixed else None)
    ev = {"metric": metric, "threshold": GRADIENT_DEPTH_SCALES, "ratio": ratio,
          "per_layer_factor": per_layer, "depth_scale": n / metric, "n_hidden": n,
          "ratio_init": ratios[0], "ratio_init_step": pairs[0][0], "ratio_end": ratios[-1],
          "init_variance_ratio": init_ratio}
    bn_own = None if vanishing else batchnorm_own_growth(ctx, pairs)
    if bn_own is not None:
        ev.update(bn_own)
    shifted = _shifted_off(ctx, layers) if vanishing else None
    cause = _batchnorm_growth_note(ctx, bn_own)
    flat_side = ", ".join(dict.fromkeys(ctx.layer_activation(i) for i in layers)) \
        if mixed and layers else ctx.activation  # the vanishing layers' own activations
    if shifted is not None:  # the biases hold the units on their flat side: zero them
        changes, text = rx.for_shifted_units(flat_side)
        ev.update(inactive_frac_init=shifted["inactive"], pre_mean_init=shifted["pre_mean"],
                  pre_std_init=shifted["pre_std"])
        cause = (f" At initialization {100 * shifted['inactive']:.3g}% of the entries of "
                 f"{_count(len(layers), 'vanishing layer')} are on the flat side of "
                 f"{flat_side} (pre-activation mean {shifted['pre_mean']:.3g}, std "
                 f"{shifted['pre_std']:.3g}), where its slope is small at every layer: the "
                 f"non-zero biases hold the units there, which makes the gradient vanish.")
    word, how = ("vanish", "smaller") if vanishing else ("explode", "larger")
    other = "larger" if vanishing else "smaller"
    unit = ctx.gradient_unit
    kinds = (" (" + ", ".join(f"layer {i}: {mixed[i]}" for i in path) + ")"
             if mixed and all(i in mixed for i in path) else "")  # a chain of several
    span = (f"a factor {per_layer:.3g} per {unit}: the {n} hidden {unit}s{kinds}"
            f"{ctx.gradient_depth_note()} span "
            f"{metric:.3g} "
            f"depth scales of {n / metric:.3g} {unit}s (trainable up to about "
            f"{GRADIENT_DEPTH_SCALES:g})")
    at_first, at_last = ctx.gradient_where(first), ctx.gradient_where(last)
    if at_init:
        ev["ratio_median"] = median_ratio
        later = (f"{median_ratio:.3g}x larger" if median_ratio >= 1 else
                 f"{1.0 / median_ratio:.3g}x smaller")
        msg = (f"Back-propagated gradients explode at initialization: the std of dL/ds in "
               f"{at_first} is {ratio:.3g}x larger than in {at_last} at step "
               f"{pairs[0][0]}{_out_of_range_note(ctx, steps)}, {span}. The first updates "
               f"are largest in the first "
               f"layers and change them most; later probes see their gradients {later} "
               f"than in {at_last} (median over {_count(len(ratios), 'probe')}"
               f"{_middle(len(ratios))}), a consequence of that start.{cause}")
        kind = "exploding_gradients"
        return metric, Finding(kind, layers, ev, msg, changes, text,
                               _severity(metric, GRADIENT_DEPTH_SCALES, log=False))
    # the first ratio is the initialization's only when step 0 had one: gradients all 0 there
    # (a zero output layer) or not finite leave it out, and its value is a later step's
    when = ("at initialization" if pairs[0][0] == 0 else
            f"at step {pairs[0][0]}, the first probe with finite non-zero gradients at both "
            "ends")
    # the other way round at first: "5.88e-07x at initialization" read as vanishing
    first_ratio = (f"{ratios[0]:.3g}x {when}" if ratios[0] >= 1 else
                   f"{1.0 / ratios[0]:.3g}x {other} {when}")
    msg = (f"Back-propagated gradients {word}: the std of dL/ds in {at_first} is "
           f"{ratio:.3g}x {how} than in {at_last} (median over "
           f"{_count(len(ratios), 'probe')}"
           f"{_middle(len(ratios))}; "
           f"{first_ratio}{_out_of_range_note(ctx, steps)}), {span}.{cause}")
    kind = "vanishing_gradients" if vanishing else "exploding_gradients"
    return metric, Finding(kind, layers, ev, msg, changes, text,
                           _severity(metric, GRADIENT_DEPTH_SCALES, log=False))


def _zero_init_above(ctx: RunContext, layers: list[int], top: int) -> bool:
    """Whether gradients that vanish in ``layers`` crossed a hidden layer (above the lowest of
    them, up to ``top``) whose weights started with one value, init_mismatch's finding: the
    gradient below a zero matrix is exactly 0 at step 0, and every later update keeps that
    layer's units identical (``W`` of rank 1), so what reaches the layers below is the
    symmetry's, not a depth's (``dL/ds_l = W_{l+1}^T (f'(s_{l+1}) * dL/ds_{l+1})``). A zeros-
    initialized sigmoid net of 4 x 16 units read "vanish ... 5.56e+27x smaller" beside
    init_mismatch; its cure (batch norm / a rescaled init) did not help. Needs init_mismatch
    to be found (it names the zero init)."""
    zero = ctx.judged_init_ratios()
    if not layers or not any(v == 0 and min(layers) < k <= top for k, v in zero.items()):
        return False
    return rule_init_mismatch(ctx)[1] is not None


def _vanishing_at(ctx: RunContext, ratio: float) -> bool:
    """Whether the gradient ratio ``ratio`` (last hidden layer's dL/ds std over the first's,
    one probe) is a vanishing finding's by itself: at least ``GRADIENT_MIN_RATIO`` and more
    than ``GRADIENT_DEPTH_SCALES`` depth scales over the gradient path."""
    return (math.isfinite(ratio) and ratio >= GRADIENT_MIN_RATIO
            and ctx.gradient_scales(ratio, True)[1] > GRADIENT_DEPTH_SCALES)


def rule_vanishing(ctx: RunContext) -> RuleResult:
    """Gradients shrink towards the input over more than 6 depth scales (and >= 10x)."""
    return _gradient_flow(ctx, vanishing=True)


def rule_exploding(ctx: RunContext) -> RuleResult:
    """Gradients grow towards the input over more than 6 depth scales (and >= 10x)."""
    return _gradient_flow(ctx, vanishing=False)


def saturation_harmless(ctx: RunContext) -> bool:
    """Whether the net fitted in spite of its saturated units: the probe batch's loss ``L``
    ended at or below ``SATURATION_FIT`` x a constant prediction's ``L_c`` (``ctx.chance_loss``);
    False when either is unknown or not finite."""
    end, chance = probe_loss_ends(ctx)[1], ctx.chance_loss
    return (math.isfinite(end) and math.isfinite(chance) and chance > 0
            and end <= SATURATION_FIT * chance)


def rule_saturation(ctx: RunContext) -> RuleResult:
    """More than ``SATURATION_FRAC`` of a bounded activation's entries have ``|f'(s)| < 5%``
    of ``sup |f'|`` at the end, while the probe batch's loss ends above ``SATURATION_FIT`` x a
    constant prediction's (:func:`saturation_harmless`). The metric, the largest saturated
    fraction, is measured whether or not the net fitted."""
    if ctx.fn is None or activation_range(ctx.fn) is None and not any(
            activation_range(p.activation.fn) is not None for p in ctx.points
            if getattr(getattr(p, "activation", None), "fn", None) is not None):
        return math.nan, None  # (a bounded layer behind a first relu one is read too)
    sat = ctx.at(ctx.end, "saturated_frac").dropna()
    if sat.empty:
        return math.nan, None
    metric = float(sat.max())
    if metric <= SATURATION_FRAC or saturation_harmless(ctx):
        return metric, None
    layers = [int(i) for i, v in sat.items() if v > SATURATION_FRAC]
    worst = int(sat.idxmax())
    sat0 = ctx.at(0, "saturated_frac")
    ratio = ctx.mean_init_ratio()
    mixed = ctx.several_activations()
    changes, text = rx.for_saturation(ctx.layer_activation(worst), ratio, ctx.config,
                                      layers=mixed,
                                      ratios=ctx.judged_init_ratios() if mixed else None)
    ev = {"metric": metric, "threshold": SATURATION_FRAC, "worst_layer": worst,
          "saturated_frac_init_max": float(sat0.max()) if not sat0.empty else math.nan,
          "n_layers_saturated": len(layers), "init_variance_ratio": ratio}
    end, chance = probe_loss_ends(ctx)[1], ctx.chance_loss
    ev.update(loss_end=end, chance_loss=chance, fit_threshold=SATURATION_FIT)
    fit = (f" The probe batch's loss ended at {end:.4g}, {end / chance:.3g}x a constant "
           f"prediction's {chance:.4g} (a net that fits ends below {SATURATION_FIT:g}x): the "
           f"flat units pass little gradient back." if math.isfinite(end)
           and math.isfinite(chance) and chance > 0 else "")
    kinds = list(dict.fromkeys(ctx.layer_activation(i) for i in layers))
    what = (f"hidden {ctx.activation} layers" if kinds == [ctx.activation] else "hidden layers ("
            + ", ".join(f"layer {i}: {ctx.layer_activation(i)}" for i in layers) + ")")
    # out of the hidden layers of that activation ('2 of 3 hidden tanh layers' counted a ReLU)
    among = (sum(ctx.layer_activation(i) == ctx.activation for i in ctx.hidden)
             if kinds == [ctx.activation] else len(ctx.hidden))
    msg = (f"{len(layers)} of {among} {what} are saturated "
           f"after {_count(ctx.end, 'step')}: up to {100 * metric:.0f}% of entries (layer "
           f"{worst}) have |f'(s)| below 5% of its maximum.{fit}")
    return metric, Finding("saturation", layers, ev, msg, changes, text,
                           _severity(metric, SATURATION_FRAC, log=False))


def _has_dead_region(ctx: RunContext) -> bool:
    return _dead_region(ctx.fn)


def _dead_region(fn: Any) -> bool:
    """Whether the activation ``fn`` has f'(s) = 0 for negative s (relu, step)."""
    if fn is None:
        return False
    s = np.array([-1.0, -10.0, -100.0])
    with np.errstate(all="ignore"):
        d = fn.derivative(s, fn.forward(s))
    return bool(np.all(np.asarray(d) == 0))


def _flat_everywhere(ctx: RunContext, index: int | None = None) -> bool:
    """Whether the activation's derivative is 0 on both sides of 0 (the Heaviside ``step``:
    f' = 0 everywhere): its units read "dead" on every example although their outputs still
    follow the input; what is missing is the gradient, not the signal. ``index``: hidden
    layer ``index``'s own activation (a network of several: a step layer behind a relu one,
    or a relu layer behind a first step one), else the network's (the first layer's)."""
    point = next((p for p in ctx.points if p.index == index), None)
    fn = getattr(getattr(point, "activation", None), "fn", None) or ctx.fn
    if fn is None:
        return False
    s = np.array([-100.0, -10.0, -1.0, -0.1, 0.1, 1.0, 10.0, 100.0])
    with np.errstate(all="ignore"):
        d = fn.derivative(s, fn.forward(s))
    return bool(np.all(np.asarray(d) == 0))


def _layer_units(ctx: RunContext) -> dict[int, int]:
    """Units of each hidden layer whose weight layer is known: ``dense.units`` where the layer
    gives it (a torch convolution's ``out_channels``, the channels ``dead_frac`` counts; its
    ``fan_out`` is ``out_channels x kernel size``), else ``fan_out`` of the Dense layer before
    it."""
    out = {}
    for p in ctx.points:
        dense = getattr(p, "dense", None)
        n = getattr(dense, "units", None) or getattr(dense, "fan_out", 0)
        if dense is not None and n >= 1:
            out[p.index] = int(n)
    return out


def dead_chance_limit(units: int) -> float:
    """``1/2 + DEAD_CHANCE_SD * sqrt(1/4 / units)``: the largest dead fraction a layer of
    ``units`` units whose weights and biases start symmetric about 0 shows by chance (each unit
    is off on every example of a batch with probability at most 1/2; see ``DEAD_FRAC``)."""
    return 0.5 + DEAD_CHANCE_SD * math.sqrt(0.25 / units)


def dead_dieoff_z(dead: float, dead_init: float, units: int) -> float:
    """``(d - d0) / sqrt(2 p (1 - p) / units)``, ``p = (d + d0) / 2`` (at least ``1 / (2
    units)``, half a unit): how many standard errors of a difference of two proportions of
    ``units`` units the dead fraction ``d`` at the end lies above ``d0`` at step 0; NaN when
    either is unknown."""
    if not (math.isfinite(dead) and math.isfinite(dead_init) and units >= 1):
        return math.nan
    p = min(max((dead + dead_init) / 2.0, 0.5 / units), 1.0 - 0.5 / units) if units > 1 else 0.5
    return (dead - dead_init) / math.sqrt(2.0 * p * (1.0 - p) / units)


def _dead_beyond_chance(ctx: RunContext, dead: pd.Series, d0: pd.Series
                        ) -> dict[int, str]:
    """The layers above ``DEAD_FRAC`` whose dead fraction is beyond chance (see
    ``DEAD_FRAC``), each with its reason: ``"biases"`` (non-zero initial biases: 0.3 alone
    decides; ``"threshold"`` where the layer's units are not known), ``"all"`` (every unit
    dead), ``"died"`` (died in training, ``DEAD_DIEOFF_Z``), ``"chance"`` (above
    :func:`dead_chance_limit`). With non-zero biases a layer at most ``DEAD_FRAC`` dead at step
    0 whose units then died (:func:`dead_dieoff_z` > ``DEAD_DIEOFF_Z``) is ``"died"`` (``"all"``
    when every unit died), not ``"biases"``: the biases did not hold it off (a default torch
    64-64-64-10 ReLU MLP at SGD lr 3: 8% -> 100% dead, the smaller learning rate its cure); a
    layer dead from the start (biases of -3) stays ``"biases"``."""
    units = _layer_units(ctx)
    nonzero = biases_nonzero(ctx.config)
    out: dict[int, str] = {}
    for i, v in dead.items():
        if not v > DEAD_FRAC:
            continue
        n = units.get(int(i))
        start = float(d0.get(i, math.nan))
        died = n is not None and dead_dieoff_z(float(v), start, n) > DEAD_DIEOFF_Z
        if n is None or (nonzero and not (died and start <= DEAD_FRAC)):
            out[int(i)] = "biases" if nonzero else "threshold"
        elif v >= 1.0:
            out[int(i)] = "all"
        elif died:
            out[int(i)] = "died"
        elif v > dead_chance_limit(n):
            out[int(i)] = "chance"
    return out


def rule_dead_relu(ctx: RunContext) -> RuleResult:
    """More than ``DEAD_FRAC`` of a layer's units have f'(s) = 0 on every probe example, beyond
    chance (:func:`_dead_beyond_chance`: above :func:`dead_chance_limit`, died in training by
    :func:`dead_dieoff_z` > ``DEAD_DIEOFF_Z``, every unit dead, or non-zero initial biases).
    The metric, the largest dead fraction, is measured for every activation (0 for
    leaky_relu: a cure that switches to it is compared with a number); the rule fires only for
    activations with a zero-derivative region and a probe batch of at least
    ``DEAD_MIN_EXAMPLES`` examples (when known)."""
    dead = ctx.at(ctx.end, "dead_frac").dropna()
    if dead.empty:
        return math.nan, None
    metric = float(dead.max())
    few = ctx.probe_examples is not None and ctx.probe_examples < DEAD_MIN_EXAMPLES
    if metric <= DEAD_FRAC or few:
        return metric, None
    if not _has_dead_region(ctx):  # the first activation has none: the layers behind it that
        own = {p.index for p in ctx.points  # have one (tanh -> relu) are read, only those
               if _dead_region(getattr(getattr(p, "activation", None), "fn", None))}
        dead = dead[dead.index.isin(own)]
        if dead.empty or float(dead.max()) <= DEAD_FRAC:
            return metric, None
    d0 = ctx.at(0, "dead_frac")
    judged = _dead_beyond_chance(ctx, dead, d0)
    if not judged:  # off by chance: the healthy share of a deep or low-dimensional net
        return metric, None
    layers = sorted(judged)
    worst = max(layers, key=lambda i: float(dead[i]))
    if judged[worst] == "died" and rule_penalty_too_strong(ctx)[1] is not None:
        # units that died while an over-strong penalty shrank the weights towards 0 (each
        # pre-activation left with its bias): the penalty's symptom, whose cure is not the
        # smaller learning rate prescribed for units that large updates killed
        return metric, None
    value = float(dead[worst])
    dead_init = float(d0.max()) if not d0.empty else math.nan
    worst_init = float(d0.get(worst, math.nan)) if not d0.empty else math.nan
    flat = _flat_everywhere(ctx, worst)  # the worst layer's own activation (several)
    own = ctx.layer_activation(worst)
    large = rule_lr_too_high(ctx)[1] is not None
    # units that died at a rate the net still learned at (no large updates): a [low] finding
    # (DEAD_LEARNED_FIT: with leaky_relu's no dead units such nets learned about as well)
    learned = (judged[worst] == "died" and not flat and not large
               and fitted(ctx, DEAD_LEARNED_FIT))
    changes, text = rx.for_dead_relu(ctx.mean_init_ratio(), dead_init, DEAD_FRAC,
                                     float(ctx.settings.get("lr", 0.01)), ctx.config,
                                     worst_layer=(worst_init, value),
                                     flat=own if flat else None,
                                     layers=ctx.several_activations(),
                                     # for_dead_relu judges the die-off itself (end - start
                                     # > end / 2 on the most-dead layer): a z-score over 8
                                     # units read 0% -> 50% dead as 'biases', He's init
                                     # (tdochunt43: lr / 10 helped, He's init did not)
                                     large_updates=large)
    n = _layer_units(ctx).get(worst)
    ev = {"metric": metric, "threshold": DEAD_FRAC, "worst_layer": worst,
          "dead_frac_init_max": dead_init, "n_layers": len(layers),
          "dead_frac_worst": value, "dead_frac_worst_init": worst_init,
          "units_worst": n if n is not None else math.nan, "reason": judged[worst]}
    why = judged[worst]
    if flat:  # the step: its units are not off, no gradient passes it (f' = 0 everywhere)
        ev["reason"] = "flat"
        # several activations: the weights above the topmost flat layer still learn
        top = max((i for i in layers if _flat_everywhere(ctx, i)), default=worst)
        below = (f"the weights into layer {top} or any layer below it"
                 if ctx.several_activations() else "any layer below the output layer")
        reason = (f" {own} has f'(s) = 0 everywhere: back-propagation passes no "
                  f"gradient through its layers, so the loss gives no update to {below} (the "
                  "units are not off: their outputs still follow the input).")
    elif why == "died" and n is not None:
        z = dead_dieoff_z(value, worst_init, n)
        ev["dieoff_z"] = z
        reason = (f" They died in training: {100 * value:.0f}% against {100 * worst_init:.0f}% "
                  f"at initialization, {z:.3g} standard errors more in a layer of {n} units.")
    elif why == "all":
        around = ctx.bypass(worst)
        if around == "":
            reason = (" No signal passes that layer: the network's output does not depend on "
                      "its input.")
        elif around:  # a residual branch: the block still passes its input on
            reason = (" No signal passes that layer, but the signal still goes around it "
                      f"through {around}: the network's output follows its input, while the "
                      "layers that feed it get no gradient.")
        else:
            reason = " No signal passes that layer."
    elif why == "chance" and n is not None:
        lim = dead_chance_limit(n)
        ev["chance_limit"] = lim
        reason = (f" That is beyond chance: a unit whose weights and bias start symmetric about 0 "
                  f"is off for every example with probability at most 1/2 ({100 * lim:.0f}% of "
                  f"{n} units, allowing for sampling).")
    else:
        reason = ""
    msg = (f"{100 * value:.0f}% of the units of layer {worst} are dead (zero derivative on "
           f"every probe example) after {_count(ctx.end, 'step')} ({100 * worst_init:.0f}% at "
           f"initialization); {len(layers)} "
           f"{'layer has' if len(layers) == 1 else 'layers have'} more than "
           f"{100 * DEAD_FRAC:.0f}%.{reason}")
    severity = _severity(value, DEAD_FRAC, log=False)
    if learned:
        end, chance = probe_loss_ends(ctx)[1], ctx.chance_loss
        ev.update(loss_end=end, chance_loss=chance, fit_threshold=DEAD_LEARNED_FIT)
        msg += (f" The network learned regardless: the probe batch's loss ended at {end:.4g}, "
                f"{end / chance:.3g}x a constant prediction's {chance:.4g} (at most "
                f"{DEAD_LEARNED_FIT:g}x).")
        severity = "low"
    return metric, Finding("dead_relu", layers, ev, msg, changes, text, severity)


def fitted(ctx: RunContext, factor: float) -> bool:
    """Whether the probe batch's loss ``L`` ended at or below ``factor`` x a constant
    prediction's ``L_c`` (``ctx.chance_loss``): the net fitted, whatever state its units are in;
    False when either loss is unknown or not finite."""
    end, chance = probe_loss_ends(ctx)[1], ctx.chance_loss
    return (math.isfinite(end) and math.isfinite(chance) and chance > 0
            and end <= factor * chance)


def _bounded(fn: Any) -> bool:
    """Whether the activation ``fn`` (an object with ``forward``) stays within +-1e3 on
    ``|s| <= 1e6`` (sigmoid, hardsigmoid: a shifted top layer saturates), not softplus."""
    try:
        with np.errstate(all="ignore"):
            v = np.asarray(fn.forward(np.array([-1e6, 1e6])), dtype=float)
        return bool(np.all(np.isfinite(v)) and np.all(np.abs(v) < 1e3))
    except Exception:  # an activation that cannot be evaluated here: say nothing of saturation
        return False


def rule_mean_shift(ctx: RunContext) -> RuleResult:
    """Activations with ``f(0) != 0`` (sigmoid) whose ``|mean activation|`` at the end exceeds
    ``MEAN_SHIFT`` in a network of ``MEAN_SHIFT_MIN_LAYERS`` or more hidden layers without batch
    norm, while the probe batch's loss ends above ``MEAN_SHIFT_FIT`` x a constant prediction's
    (:func:`fitted`; a sigmoid's mean is about 0.5 in a net that fits too). The metric, the
    largest ``|mean activation|``, is measured whether or not the net fitted."""
    if ctx.fn is None or ctx.config.get("batchnorm"):
        return math.nan, None
    m = ctx.at(ctx.end, "act_mean").dropna().abs()
    if m.empty:
        return math.nan, None
    metric = float(m.max())  # measured for every activation, so a re-run can be compared
    f0s = {}  # f(0) of each hidden layer's own activation (the network's where not known):
    for p in ctx.points:  # a tanh -> sigmoid net's sigmoid layers were not judged
        fn = getattr(getattr(p, "activation", None), "fn", None) or ctx.fn
        f0s[p.index] = float(np.asarray(fn.forward(np.zeros(1)))[0])
    m = m[[abs(f0s.get(int(i), 0.0)) >= 1e-6 for i in m.index]]
    if m.empty or len(ctx.hidden) < MEAN_SHIFT_MIN_LAYERS or float(m.max()) <= MEAN_SHIFT:
        return metric, None
    if fitted(ctx, MEAN_SHIFT_FIT):  # shifted, but the net fitted: nothing to cure
        return metric, None
    layers = [int(i) for i, v in m.items() if v > MEAN_SHIFT]
    worst = int(m.idxmax())
    f0, shifted = f0s[worst], float(m.max())
    names = ", ".join(dict.fromkeys(ctx.layer_activation(i) for i in layers))
    fn = next((getattr(getattr(p, "activation", None), "fn", None) for p in ctx.points
               if p.index == worst), None)
    changes, text = rx.for_mean_shift(ctx.mean_init_ratio("tanh"), names, shifted,
                                      _bounded(fn or ctx.fn))
    end, chance = probe_loss_ends(ctx)[1], ctx.chance_loss
    ev = {"metric": metric, "threshold": MEAN_SHIFT, "worst_layer": worst, "f0": f0,
          "n_layers": len(layers), "loss_end": end, "chance_loss": chance,
          "fit_threshold": MEAN_SHIFT_FIT}
    fit = (f" The probe batch's loss ended at {end:.4g}, {end / chance:.3g}x a constant "
           f"prediction's {chance:.4g} (a net that fits ends below {MEAN_SHIFT_FIT:g}x)."
           if math.isfinite(end) and math.isfinite(chance) and chance > 0 else "")
    msg = (f"{names} activations are not zero-centred: the mean activation reaches "
           f"{shifted:.2f} (layer {worst}) in a {len(ctx.hidden)}-hidden-layer network, shifting "
           f"every next layer's input.{fit}")
    return metric, Finding("mean_shift", layers, ev, msg, changes, text,
                           _severity(shifted, MEAN_SHIFT, log=False))


def _mismatch_log(ratio: float, upper: float = 1.0) -> float:
    """``|ln|`` of the factor by which ``ratio`` (Var(W) / the recommended variance) lies
    outside ``[1, upper]``: ``ln(1 / ratio)`` below 1, ``ln(ratio / upper)`` above ``upper``,
    0 within; ``inf`` for a ratio of 0 (all weights equal)."""
    if not ratio > 0:
        return math.inf
    if ratio < 1.0:
        return -math.log(ratio)
    return math.log(ratio / upper) if ratio > upper else 0.0


def rule_init_mismatch(ctx: RunContext) -> RuleResult:
    """Init mismatch: the worst layer's factor outside ``[1, upper]`` times the recommended
    variance (``upper``: :func:`~depthlab.diagnosis.prescriptions.init_upper_ratio`, the
    critical variance's multiple where the recommended one is deep in the ordered phase of the
    activation's mean field, sigmoid 103; else 1) above ``INIT_MISMATCH`` by more than the
    measurement's noise: a layer is flagged when ``ln factor > ln INIT_MISMATCH +
    INIT_MISMATCH_SD sqrt(2 / N)``, ``N`` its weights (:func:`weight_count`; a convolution's
    ``cin x cout x k^2``, not its ``fan_in x fan_out``, k^2 times as many). The factor is a
    sample variance's, whose relative sd is ``sqrt((kurtosis - 1) / N)``: ``sqrt(2 / N)`` for
    Gaussian weights, ``sqrt(0.8 / N)`` for uniform ones (the larger taken: the kurtosis is not
    recorded). PyTorch's default nn.Linear init U(+-1/sqrt(fan_in)), Var 1/(3 fan_in), is
    exactly 4x below He's fan_out mode in a relu Linear(64, 96): the finding fired or not with
    the draw (measured factor 3.88-4.12 over 200 seeds, relative sd 1.2%, 98 of them above 4;
    the flagged bound is now 4.15, none above it); at 2 sd a layer drawn at the threshold fires
    by chance with probability < 2.3% (Gaussian), < 0.1% (uniform). A non-zero variance is
    flagged only while the probe batch's loss ends above ``INIT_MISMATCH_FIT`` x a constant
    prediction's (:func:`fitted`): a net that fits was not held back by its initializer."""
    if ctx.config.get("batchnorm"):
        return math.nan, None
    ratios = ctx.judged_init_ratios()
    if not ratios:
        return math.nan, None
    # a variance of 0 (init zeros or constant: every unit of the layer starts identical and
    # stays so, the symmetry nothing in training breaks) is an infinite mismatch; a larger
    # variance up to the critical one is none where the recommended one lies deep in the
    # ordered phase (sigmoid: up to 103x Glorot's, rx.init_upper_ratio)
    uppers = {k: rx.init_upper_ratio(ctx.layer_activation(k)) for k in ratios}
    logs = {k: _mismatch_log(v, uppers[k]) for k, v in ratios.items()}
    worst = max(logs, key=logs.get)
    metric = math.exp(logs[worst])  # the worst factor, >= 1 either way
    # beyond the threshold by more than the sample variance's noise: INIT_MISMATCH_SD of its
    # relative sd sqrt(2 / N), N the weights (weight_count) (Gaussian's; a uniform's is smaller)
    n_w = {p.index: weight_count(p.dense) for p in ctx.points if p.dense is not None}
    layers = [k for k, v in logs.items() if v > math.log(INIT_MISMATCH)
              + INIT_MISMATCH_SD * math.sqrt(2.0 / max(n_w.get(k, 0), 1))]
    if not layers:
        return metric, None
    if fitted(ctx, INIT_MISMATCH_FIT) and all(ratios[k] > 0 for k in layers):
        return metric, None  # off the recipe, but the net fitted: nothing held it back
    worst = max(layers, key=logs.get)  # the worst layer beyond its noise
    own = ctx.layer_activation(worst)  # the worst layer's activation (several in a net)
    rec, upper = rx.recommended_init(own), uppers[worst]
    r = ratios[worst]
    changes, text = rx.for_init_mismatch(ctx.activation, layers=ctx.several_activations())
    ev = {"metric": metric, "threshold": INIT_MISMATCH, "worst_layer": worst,
          "variance_ratio": r, "n_layers": len(layers)}
    if r == 0:
        msg = (f"The initial weights of layer {worst} all have one value (variance 0, init "
               f"{ctx.config.get('init', '?')}): its units start identical and receive "
               f"identical updates, so they never differ; the {rec} variance is recommended "
               f"for {own} units.")
    else:
        msg = (f"The initial weight variance of layer {worst} is {r:.3g}x the {rec} variance "
               f"recommended for {own} units (init {ctx.config.get('init', '?')}).")
        if upper > 1.0 and r > upper:
            ev["critical_ratio"] = upper
            msg = (f"{msg[:-2]}), {r / upper:.3g}x the critical variance of their mean field "
                   f"({upper:.3g}x {rec}'s, chi1 = 1): the chaotic phase.")
        end, chance = probe_loss_ends(ctx)[1], ctx.chance_loss
        ev.update(loss_end=end, chance_loss=chance, fit_threshold=INIT_MISMATCH_FIT)
        if math.isfinite(end) and math.isfinite(chance) and chance > 0:
            msg += (f" The probe batch's loss ended at {end:.4g}, {end / chance:.3g}x a "
                    f"constant prediction's {chance:.4g} (a net that fits ends below "
                    f"{INIT_MISMATCH_FIT:g}x).")
    return metric, Finding("init_mismatch", layers, ev, msg, changes, text,
                           _severity(metric, INIT_MISMATCH))


DATA_DRIVEN_INITS = frozenset({"lsuv"})
"""Initializations whose weights are set from a data batch, not drawn from a fan-in/fan-out
variance formula: LSUV (Mishkin & Matas 2016) scales every layer so that its output variance
on the batch is 1, so its weight variance departs from the formula's by design (the first
layer's by the inputs' second moment E[x^2], e.g. 27x Glorot's on digits in [0, 1]). A cure
that re-initializes with one is judged by :func:`init_signal_factor`, what it is for."""

INIT_SIGNAL_METRIC = "init signal factor (data-driven init: judged by its step-0 signal)"
"""The metric's name of an init_mismatch cure judged by :func:`init_signal_factor`."""


def init_signal_factor(ctx: RunContext) -> float:
    """How far the initial weights' signal departs from one that keeps its scale through the
    hidden layers, at step 0: ``exp(max(|ln(s_L / s_1)|, |ln(g_1 / g_L)|))``, ``s_l`` the
    pre-activation std of hidden layer ``l`` (forward) and ``g_l`` the gradient std at the
    pre-activation of the gradient path's position ``l`` (backward, ``grad_pre_std``); >= 1, 1
    for a signal that neither shrinks nor grows; NaN when neither was measured or one hidden
    layer only. This is what a variance formula's init is for (LeCun/Glorot/He keep both
    ratios near 1), and what a data-driven init (:data:`DATA_DRIVEN_INITS`) is judged by."""
    logs = []
    for s in (ctx.at(0, "pre_std"), ctx.gradient_stds(0)):
        s = s.dropna()
        if len(s) < 2:
            continue
        first, last = float(s.iloc[0]), float(s.iloc[-1])
        if first > 0 and last > 0 and math.isfinite(first) and math.isfinite(last):
            logs.append(abs(math.log(last / first)))
        elif first != last:
            logs.append(math.inf)  # a signal that died (0) or overflowed on the way
    return math.exp(max(logs)) if logs else math.nan


def logit_floor(loss: Any, output_range: tuple[float, float], n_outputs: int) -> float:
    """The lowest loss one example can reach when ``loss`` (one taking logits) is fed values
    in ``output_range`` (a bounded output activation's): ``cross_entropy`` over ``n_outputs``
    classes ``ln(1 + (K - 1) e^-(hi - lo))`` (the right class at ``hi``, the others at ``lo``:
    a softmax or sigmoid output over 10 classes ``ln(1 + 9/e)`` = 1.46 whatever the training);
    ``binary_cross_entropy`` ``min(softplus(-hi), softplus(lo))`` (a sigmoid output: a
    positive example's loss at least softplus(-1) = 0.313, a negative one's ln 2); 0 for
    other losses (their targets may lie in the range)."""
    lo, hi = output_range
    if loss == "cross_entropy" and n_outputs >= 2:
        return math.log1p((n_outputs - 1) * math.exp(-(hi - lo)))
    if loss == "binary_cross_entropy":
        return min(math.log1p(math.exp(-hi)), math.log1p(math.exp(lo)))
    return 0.0


def rule_bounded_logits(ctx: RunContext) -> RuleResult:
    """A loss that takes logits (``cross_entropy``, ``binary_cross_entropy``) after a bounded
    ``output_activation`` (softmax, sigmoid, tanh, ...): the metric is the lowest loss an
    example can reach (:func:`logit_floor`; 0 without such an output), flagged above
    ``LOGIT_FLOOR``. NaN when the run's config names no ``output_activation`` key (a torch
    model) or the loss is unknown."""
    if "output_activation" not in ctx.config:
        return math.nan, None
    from ..activations import get_activation
    from ..losses import get_loss

    try:
        loss = get_loss(ctx.settings.get("loss", "cross_entropy")).name
    except (ValueError, TypeError):
        return math.nan, None
    out = ctx.config.get("output_activation")
    if out is None:
        return 0.0, None
    try:
        fn = get_activation(out)
    except (ValueError, TypeError):
        return math.nan, None
    bounds = activation_range(fn)
    n_outputs = ctx.net.n_outputs if ctx.net is not None else 0
    metric = 0.0 if bounds is None else logit_floor(loss, bounds, n_outputs)
    if not metric > LOGIT_FLOOR:
        return metric, None
    name = activation_name(out, fn)
    changes, text = rx.for_bounded_logits(name, loss)
    ev = {"metric": metric, "threshold": LOGIT_FLOOR, "output_low": bounds[0],
          "output_high": bounds[1], "n_outputs": n_outputs, "chance_loss": ctx.chance_loss}
    chance = (f" (a constant prediction's: {ctx.chance_loss:.4g})"
              if math.isfinite(ctx.chance_loss) else "")
    msg = (f"The network ends in {name} (output_activation={name!r}) but {loss} takes logits "
           f"and applies {'softmax' if loss == 'cross_entropy' else 'the sigmoid'} itself: its "
           f"inputs are squashed into [{bounds[0]:.3g}, {bounds[1]:.3g}], so no example's loss "
           f"can fall below {metric:.4g}{chance} and the gradients shrink as the outputs "
           f"saturate.")
    return metric, Finding("bounded_logits", [], ev, msg, changes, text,
                           _severity(metric, LOGIT_FLOOR))


def input_scale(mean: Any, std: Any, scale_limit: float = INPUT_SCALE) -> dict[str, float]:
    """How far inputs with per-feature ``mean`` and ``std`` are from standardized: ``scale``
    the largest feature's root mean square ``sqrt(mean^2 + std^2)`` (``feature``: its index),
    ``offset`` the mean vector's norm over the spread's, ``sqrt(sum mean^2 / sum std^2)`` (NaN
    when no feature varies), ``metric`` the larger of ``scale / scale_limit`` (``INPUT_SCALE``,
    or ``INPUT_SCALE_LOGITS`` under a loss on logits) and ``offset / INPUT_OFFSET`` (NaN when
    not known)."""
    m = np.asarray(mean, dtype=np.float64).ravel()
    sd = np.asarray(std, dtype=np.float64).ravel()
    nan = math.nan
    if m.size == 0 or m.shape != sd.shape or not (np.all(np.isfinite(m))
                                                  and np.all(np.isfinite(sd))):
        return {"metric": nan, "scale": nan, "offset": nan, "feature": -1}
    with np.errstate(over="ignore"):
        rms = np.hypot(m, sd)
        spread = float(np.sum(sd ** 2))
        offset = math.sqrt(float(np.sum(m ** 2)) / spread) if spread > 0 else nan
    feature = int(np.argmax(rms))
    scale = float(rms[feature])
    parts = [scale / scale_limit] + ([offset / INPUT_OFFSET] if math.isfinite(offset) else [])
    return {"metric": max(parts), "scale": scale, "offset": offset, "feature": feature}


def _input_scale_limit(ctx: RunContext) -> float:
    """``INPUT_SCALE_LOGITS`` under a loss on logits (cross_entropy, binary_cross_entropy),
    else ``INPUT_SCALE`` (regression losses, torch's BCELoss/NLLLoss on probabilities or
    log-probabilities, or not known)."""
    from ..losses import get_loss

    try:
        logits = get_loss(ctx.settings.get("loss", "cross_entropy")).name in (
            "cross_entropy", "binary_cross_entropy")
    except (ValueError, TypeError):
        logits = False
    return INPUT_SCALE_LOGITS if logits else INPUT_SCALE


def rule_unscaled_inputs(ctx: RunContext) -> RuleResult:
    """Inputs far from standardized (see ``INPUT_SCALE``/``INPUT_OFFSET``): a feature's root
    mean square above 10 (50 under a loss on logits), or a mean vector more than 5x the
    spread's norm. Measured on the
    training inputs as the network sees them (``ctx.input_stats``; NaN when not known)."""
    st = ctx.input_stats
    if not st:
        return math.nan, None
    mean = np.asarray(st["mean"], dtype=np.float64)
    std = np.asarray(st["std"], dtype=np.float64)
    limit = _input_scale_limit(ctx)
    r = input_scale(mean, std, limit)
    metric = r["metric"]
    if not metric > 1.0:
        return metric, None
    j = r["feature"]
    n = mean.size
    rms = np.hypot(mean, std)
    n_large = int(np.sum(rms > limit))
    pre = ctx.at(0, "pre_std")
    first = ctx.hidden[0] if ctx.hidden else None
    pre0 = float(pre[first]) if first is not None and first in pre.index else math.nan
    changes, text = rx.for_unscaled_inputs()
    ev = {"metric": metric, "threshold": 1.0, "scale": r["scale"], "offset": r["offset"],
          "scale_limit": limit, "offset_limit": INPUT_OFFSET, "feature": j,
          "feature_mean": float(mean[j]), "feature_std": float(std[j]),
          "n_features": n, "n_features_large": n_large, "pre_std_first_layer": pre0}
    parts = []
    if r["scale"] > limit:
        parts.append(f"feature {j} has a root mean square of {r['scale']:.4g} (mean "
                     f"{mean[j]:.4g}, std {std[j]:.4g}; {n_large} of {_count(n, 'feature')} "
                     f"above {limit:g}, standardized ones have 1)")
    if r["offset"] > INPUT_OFFSET:
        parts.append(f"the features' means are {r['offset']:.3g}x their spread (norm of the "
                     f"mean vector over that of the stds; above {INPUT_OFFSET:g} is flagged), "
                     f"so every input is mostly one constant vector")
    pre_text = (f"; the first hidden layer's pre-activations start with std {pre0:.4g} "
                f"(about 1 to 1.4 for standardized inputs and a variance-preserving init)"
                if math.isfinite(pre0) else "")
    msg = (f"The inputs are not standardized: {' and '.join(parts)}{pre_text}. The first "
           f"layer's gradients and curvature grow with the inputs' square, so one learning "
           f"rate is too large for it or too small for the layers above.")
    return metric, Finding("unscaled_inputs", [], ev, msg, changes, text,
                           _severity(metric, 1.0))


def probe_loss_ends(ctx: RunContext) -> tuple[float, float]:
    """The fixed probe batch's loss at the first probed step and at the last (``ctx.end``);
    NaN where the table has no loss row for that step."""
    start = end = math.nan
    if "loss" in ctx.table.columns and ctx.steps:
        try:
            losses = ctx.table["loss"].xs(0, level="layer")
        except KeyError:
            pass
        else:
            start = float(losses.get(ctx.steps[0], math.nan))
            end = float(losses.get(ctx.end, math.nan))
    return start, end


def stuck_at_chance(ctx: RunContext, end: float) -> bool:
    """Whether the probe loss ``end`` is at a constant prediction's ``L_c``
    (``ctx.chance_loss``): ``(1 - LR_STEP_FALL) L_c <= end <= CHANCE_ABOVE L_c`` (False when
    either is unknown). The lower bound: it did not fall below ``L_c`` by more than
    ``LR_STEP_FALL``. The upper bound: the rules that read this (the weight penalty, the
    gradient through time, dropout too strong; lr_too_low reads :func:`far_from_fitted`) say
    the network sits at a near-constant prediction, and a
    network whose outputs are near-constant (small logits, outputs near the targets' mean)
    has a loss near ``L_c`` (measured 1.0-1.8x: digits ReLU nets at lr 1e-4 .. 1e-7, He's
    variance 2.90-2.99, 4x He's 4.16, against ln 10 = 2.30). A loss ``CHANCE_ABOVE`` (10)
    times ``L_c`` or more is not that: its outputs are large and far from constant
    (cross-entropy ``L``: the true class's probability has geometric mean ``e^-L``, ``C^-10``
    at 10x ``ln C``, not a near-uniform prediction's ``1/C``), an exploded or diverged
    network whose small updates its own findings explain (N(0, 4) ReLU weights at lr 1e-8: loss
    1306 = 567x ln 10; a clip_grad_norm re-run of such a net: 1.1e9). It was the lower bound
    alone, and those read as 'the learning rate is too low'."""
    chance = ctx.chance_loss
    return (math.isfinite(chance) and chance > 0 and math.isfinite(end)
            and (1.0 - LR_STEP_FALL) * chance <= end <= CHANCE_ABOVE * chance)


def rule_unscaled_targets(ctx: RunContext) -> RuleResult:
    """Regression targets far from standardized (see ``TARGET_SCALE``/``TARGET_OFFSET``): a
    column's root mean square above 10, or the columns' means more than 2x their spread, while
    the probe batch's loss ends above ``TARGET_FIT`` of a constant prediction's (NaN when the
    targets are not known: a loss with an accuracy, one-hot rows, the torch doctor)."""
    st = getattr(ctx, "target_stats", None)
    if not st:
        return math.nan, None
    # one entry per target entry (targets shaped (N, C, L): statistics (C, L), raveled as
    # input_scale's feature index is)
    mean = np.ravel(np.asarray(st["mean"], dtype=np.float64))
    std = np.ravel(np.asarray(st["std"], dtype=np.float64))
    r = input_scale(mean, std, TARGET_SCALE)
    parts_m = [r["scale"] / TARGET_SCALE] + (
        [r["offset"] / TARGET_OFFSET] if math.isfinite(r["offset"]) else [])
    metric = max(parts_m) if math.isfinite(r["scale"]) else math.nan
    if not metric > 1.0:
        return metric, None
    end = probe_loss_ends(ctx)[1]
    chance = ctx.chance_loss
    fitted = (math.isfinite(end) and math.isfinite(chance) and chance > 0
              and end <= TARGET_FIT * chance)
    if fitted:
        return metric, None
    j = r["feature"]
    # with unscaled inputs too, each cure alone can fail (inputs x 100 + 50, targets 300 +- 10,
    # adam 1e-3, 300 steps: 7787 raw, 3.2e4 inputs standardized, 1.4e4 targets standardized,
    # 7.0 both): this one standardizes both
    inputs_too = rule_unscaled_inputs(ctx)[1] is not None
    changes, text = rx.for_unscaled_targets(inputs_too)
    ev = {"metric": metric, "threshold": 1.0, "scale": r["scale"], "offset": r["offset"],
          "scale_limit": TARGET_SCALE, "offset_limit": TARGET_OFFSET, "column": j,
          "column_mean": float(mean[j]), "column_std": float(std[j]),
          "n_columns": int(mean.size), "probe_loss_end": end, "constant_loss": chance}
    parts = []
    if r["scale"] > TARGET_SCALE:
        parts.append(f"target column {j} has a root mean square of {r['scale']:.4g} (mean "
                     f"{mean[j]:.4g}, std {std[j]:.4g}; standardized ones have 1)")
    if math.isfinite(r["offset"]) and r["offset"] > TARGET_OFFSET:
        parts.append(f"the targets' means are {r['offset']:.3g}x their spread (above "
                     f"{TARGET_OFFSET:g} is flagged)")
    fit = (f"; the probe batch's loss ended at {end:.4g}, {end / chance:.2g}x a constant "
           f"prediction's ({chance:.4g})" if math.isfinite(end) and math.isfinite(chance)
           and chance > 0 else "")
    msg = (f"The regression targets are not standardized: {' and '.join(parts)}{fit}. The "
           f"output layer starts near 0 with outputs of order 1, so most of the training "
           f"budget goes into reaching the targets' scale and offset, with gradients (and "
           f"steps) as large as the targets.")
    return metric, Finding("unscaled_targets", [], ev, msg, changes, text,
                           _severity(metric, 1.0))


def rule_exploding_activations(ctx: RunContext) -> RuleResult:
    """A residual network's activations grow with depth at initialization: the ``act_std`` of
    the last hidden layer over the first's at step 0 (see ``FORWARD_GROWTH``). Measured for
    every residual network (a batch-normalized cure is compared with a number), judged without
    batch normalization; NaN for other networks (a plain network's growth is its weights',
    which init_mismatch judges)."""
    if not ctx.config.get("residual") or len(ctx.hidden) < 2:
        return math.nan, None
    a = ctx.at(0, "act_std")
    first, last = ctx.hidden[0], ctx.hidden[-1]
    if first not in a.index or last not in a.index:
        return math.nan, None
    a_first, a_last = float(a[first]), float(a[last])
    if not (math.isfinite(a_first) and a_first > 0 and math.isfinite(a_last)):
        return math.nan, None
    metric = a_last / a_first
    if not metric > FORWARD_GROWTH or ctx.config.get("batchnorm"):
        return metric, None
    blocks = max(1, (len(ctx.hidden) - 1) // 2)  # two nonlinearities per pre-activation block
    per_block = metric ** (1.0 / blocks)
    layers = [int(i) for i in ctx.hidden
              if math.isfinite(float(a.get(i, math.nan)))
              and float(a.get(i, math.nan)) > FORWARD_GROWTH * a_first]
    loss0 = math.nan
    if "loss" in ctx.table.columns:
        try:
            loss0 = float(ctx.table["loss"].xs(0, level="layer").get(0, math.nan))
        except KeyError:
            pass
    chance = ctx.chance_loss
    changes, text = rx.for_exploding_activations(ctx.config)
    ev = {"metric": metric, "threshold": FORWARD_GROWTH, "act_std_first": a_first,
          "act_std_last": a_last, "n_blocks": blocks, "per_block_factor": per_block,
          "loss_step0": loss0, "chance_loss": chance}
    start = (f" (the probe batch's loss at step 0: {loss0:.4g}"
             + (f"; a constant prediction's: {chance:.4g})" if math.isfinite(chance) else ")")
             if math.isfinite(loss0) else "")
    msg = (f"The residual stream's activations grow with depth: at initialization their std "
           f"rises from {a_first:.3g} (layer {first}) to {a_last:.3g} (layer {last}), "
           f"{metric:.3g}x over {_count(blocks, 'residual block')} ({per_block:.3g}x per "
           f"block; above {FORWARD_GROWTH:g}x is flagged): without normalization every block "
           f"adds its branch's variance to the stream's, so the outputs start large{start}.")
    return metric, Finding("exploding_activations", layers, ev, msg, changes, text,
                           _severity(metric, FORWARD_GROWTH, log=False))


def loss_trajectory(losses: np.ndarray) -> dict[str, float]:
    """Loss at step 0, running minimum of the moving average over 10% of the steps, mean of
    the last 10% of steps, and the rise ``end / max(min(step 0, best), floor * step 0)``."""
    k = max(1, losses.size // 10)
    start = float(losses[0])
    smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
    best = min(start, float(smooth.min()))
    end = float(losses[-k:].mean())
    ref = max(best, DIVERGENCE_FLOOR * start)
    return {"loss_step0": start, "loss_best": best, "loss_end": end, "window": k,
            "rise": end / ref if ref > 0 else math.nan}


def _probe_loss_rise(ctx: RunContext) -> float:
    """The loss rise on the fixed probe batch (``loss`` at layer 0 of the probe table, each
    probed step): ``last / max(min(first, lowest), floor * first)``; NaN when not recorded.
    One batch throughout, so it is free of the mini-batches' sampling noise."""
    t = ctx.table
    if t.empty or "loss" not in t.columns:
        return math.nan
    try:
        v = t["loss"].xs(0, level="layer").dropna().sort_index().to_numpy(dtype=np.float64)
    except KeyError:
        return math.nan
    if v.size < 2 or not np.all(np.isfinite(v)):
        return math.nan
    ref = max(min(v[0], float(v.min())), DIVERGENCE_FLOOR * v[0])
    return float(v[-1] / ref) if ref > 0 else math.nan


def _usual_lr(optimizer: Any) -> float | None:
    """The default learning rate of a depthlab optimizer named ``optimizer`` (torch's), None for
    another (a torch optimizer class the torch doctor was given)."""
    from ..optimizers import REGISTRY as OPTIMIZERS

    try:
        return float(OPTIMIZERS.defaults(str(optimizer))["lr"])
    except (KeyError, ValueError, TypeError):
        return None


def rule_divergence(ctx: RunContext) -> RuleResult:
    """Non-finite loss, or the loss ended well above its start or its best (finite). The cure
    is scaled to the first update's ratio (:func:`first_update_ratio`, see
    :func:`~depthlab.diagnosis.prescriptions.for_divergence`), measured before a loss that
    went non-finite overflowed (a relu net at sgd lr 100 went NaN at step 5: lr/10 went NaN
    at step 7; its first step rewrote the weights 13x, so 1e3x smaller), unless the loss was
    non-finite before any update (the initial weights' cure)."""
    lr = float(ctx.settings.get("lr", 0.01))
    hist = ctx.history
    losses = np.asarray(hist.step_loss, dtype=np.float64)
    # a finite run's first step says how much smaller the rate must be: a tanh net at sgd lr
    # 1e6 saturated and stayed finite (rise 3.6e5x, updates 1.6e5x the weights' norm); lr/10 and
    # the usual 1e-3 did not help, lr_step_down's 0.1 did (64-32-32-10 on
    # digits: train loss 9.8e5 -> 0.15, val acc 0.44 -> 0.94)
    first = first_update_ratio(ctx)
    changes, text = rx.for_divergence(lr, _usual_lr(ctx.settings.get("optimizer")),
                                      update_ratio=first, limit=_step_limit(ctx))
    if hist.diverged or not np.all(np.isfinite(losses)):
        div = hist.divergence
        step = div.step if div is not None else int(losses.size)
        ev = {"metric": math.inf, "threshold": DIVERGENCE_RISE, "step": step, "lr": lr}
        at_init = div is not None and div.before_update and rx.for_divergence_at_init(
            ctx.activation, ctx.config, div.matched_init, layers=ctx.several_activations())
        if at_init:  # no learning rate changes the first loss: the initial weights' cure
            changes, text = at_init
            ev["before_update"] = True
            msg = (f"Training diverged: the loss was non-finite on the first mini-batch, "
                   f"before any update, so the initial weights overflow (the learning rate, "
                   f"{lr:g}, plays no part).")
        else:
            ev["first_update_ratio"] = first
            msg = (f"Training diverged: the loss became non-finite at step {step} with "
                   f"learning rate {lr:g}.")
        return math.inf, Finding("divergence", [], ev, msg, changes, text, "high")
    if losses.size < 2:
        return math.nan, None
    tr = loss_trajectory(losses)
    probe_rise = _probe_loss_rise(ctx)
    metric = min(tr["rise"], probe_rise) if math.isfinite(probe_rise) else tr["rise"]
    if not metric > DIVERGENCE_RISE:
        return metric, None
    ev = {"metric": metric, "threshold": DIVERGENCE_RISE, **tr, "probe_rise": probe_rise,
          "lr": lr, "first_update_ratio": first}
    # each rise beside its own losses: the metric alone (the smaller, often the probe
    # batch's) read as the quotient of the training losses printed before it (0.3274 from a
    # best of 0.1175 "1.98x", where they rose 2.69x and the probe batch's loss 1.98x)
    probe = (f", and the fixed probe batch's loss {probe_rise:.3g}x from its start or best"
             if math.isfinite(probe_rise) else "")
    # said in the order it happened: "rose to 1.174 ... from 2.42 at step 0 and a best moving
    # average of 0.7604" read as a fall from 2.42 to 1.174 (the loss fell to 0.76 first)
    start, best, end, w = tr["loss_step0"], tr["loss_best"], tr["loss_end"], tr["window"]
    floor = (f" (from {DIVERGENCE_FLOOR:g}x its start, the floor for a best near 0)"
             if best < DIVERGENCE_FLOOR * start else "")
    if best < start:
        msg = (f"Training loss rose to {end:.4g} (mean of the last {w} steps) after falling "
               f"from {start:.4g} at step 0 to a best moving average of {best:.4g}: "
               f"{tr['rise']:.3g}x{floor}{probe}, with learning rate {lr:g}.")
    else:
        msg = (f"Training loss rose from {start:.4g} at step 0 to {end:.4g} (mean of the last "
               f"{w} steps) without ever falling below its start: {tr['rise']:.3g}x{probe}, "
               f"with learning rate {lr:g}.")
    return metric, Finding("divergence", [], ev, msg, changes, text,
                           _severity(metric, DIVERGENCE_RISE, log=False))


def _large_steps_lowered_the_loss(ctx: RunContext, steps: list[int]) -> bool:
    """Whether the fixed probe batch's loss (layer 0 of the probe table) fell by more than
    ``LR_STEP_FALL`` from the probe before each of ``steps`` to it: updates that keep lowering
    the loss do not overshoot, however large against the weights (False when not recorded)."""
    t = ctx.table
    if not steps or t.empty or "loss" not in t.columns:
        return False
    try:
        loss = t["loss"].xs(0, level="layer").dropna().sort_index()
    except KeyError:
        return False
    probed = list(loss.index)
    for step in steps:
        before = [p for p in probed if p < step]
        if step not in loss.index or not before:
            return False
        now, prev = float(loss[step]), float(loss[before[-1]])
        if not (math.isfinite(now) and math.isfinite(prev) and now < (1.0 - LR_STEP_FALL) * prev):
            return False
    return True


def _update_ratios(ctx: RunContext) -> pd.Series | None:
    """The hidden layers' finite ``||dW|| / ||W||`` probes (indexed by step and layer), or None
    when there are none."""
    if ctx.table.empty or "update_ratio" not in ctx.table.columns:
        return None
    ur = ctx.table["update_ratio"].dropna()
    ur = ur[(ur.index.get_level_values("layer") >= 1) & np.isfinite(ur.to_numpy())]
    return None if ur.empty else ur


def _early_ratios(ctx: RunContext) -> pd.Series | None:
    """The hidden layers' finite ``||dW|| / ||W||`` at the first, unprobed updates
    (``ctx.early_update_ratios``, indexed by step and layer), or None when there are none."""
    er = ctx.early_update_ratios
    if er is None or not len(er):
        return None
    er = er.dropna()
    er = er[(er.index.get_level_values("layer") >= 1) & np.isfinite(er.to_numpy())]
    return None if er.empty else er


def early_loss_fall(ctx: RunContext) -> tuple[float, float]:
    """``(mean training loss after updates 1..EARLY_UPDATE_STEPS, loss at step 0)``: every
    step's mini-batch loss (``ctx.history.step_loss[1:EARLY_UPDATE_STEPS + 1]``, each taken
    after that many updates) against the fixed probe batch's loss at step 0 (the first
    mini-batch's when not probed); NaN where not recorded."""
    losses = np.asarray(ctx.history.step_loss, dtype=np.float64)
    window = losses[1:EARLY_UPDATE_STEPS + 1]
    start = math.nan
    t = ctx.table
    if not t.empty and "loss" in t.columns and ctx.steps and ctx.steps[0] == 0:
        try:
            start = float(t["loss"].xs(0, level="layer").get(0, math.nan))
        except KeyError:
            pass
    if not math.isfinite(start) and losses.size:
        start = float(losses[0])
    mean = float(window.mean()) if window.size and np.all(np.isfinite(window)) else math.nan
    return mean, start


_ADAPTIVE = ("adam", "adamw", "nadam", "radam", "adamax", "rmsprop", "adagrad", "adadelta")


def _penalty_step_ratio(ctx: RunContext) -> float:
    """``||dW|| / ||W||`` of the penalty's own step at the middle (k = 5) of the first
    updates, median over the hidden layers: ``lr (2 l2 + wd) + lr l1 / max(rms(W) - (k - 1)
    lr l1, lr l1)`` (``l2 sum w^2`` gives ``2 l2 w``, a ``weight_decay`` adds ``wd w``, ``l1
    sum |w|`` gives ``l1 sign(w)``, of norm ``sqrt(n) l1``, which has moved the weights ``(k -
    1) lr l1`` towards 0 by then; with sgd momentum, the sum its buffer has reached). 0 for an
    adaptive optimizer (Adam, RMSprop, ...: its steps are about ``lr`` whatever the gradient),
    except a decoupled decay (AdamW), which takes ``lr wd`` of every weight."""
    lr = float(ctx.settings.get("lr", 0.01))
    okw = ctx.settings.get("optimizer_kwargs") or {}
    okw = okw if isinstance(okw, dict) else {}
    name = str(ctx.settings.get("optimizer", "sgd")).lower().replace("_", "")
    wd = float(okw.get("weight_decay", 0.0) or 0.0)
    if name == "adamw" or okw.get("decoupled_weight_decay"):
        return lr * wd
    if name in _ADAPTIVE:
        return 0.0
    l1, l2 = (float(ctx.settings.get(k, 0.0) or 0.0) for k in ("l1", "l2"))
    ratio = lr * (2.0 * l2 + wd)
    if l1 > 0 and ctx.steps:
        std = ctx.at(ctx.steps[0], "weight_std")
        std = std[np.isfinite(std) & (std > 0)]
        if not std.empty:  # l1 moves each weight lr l1 whatever its size: by the middle of
            # the first updates the weights are that much closer to 0 (at least one step away)
            step, k = lr * l1, EARLY_UPDATE_STEPS // 2
            ratio += step / max(float(std.median()) - (k - 1) * step, step)
    # sgd momentum mu (dampening d) sums the pull: step k takes (1 - d) (1 - mu^k) / (1 - mu)
    # times it (the first is 1x); taken at the middle of the first updates
    mu = float(okw.get("momentum", 0.0) or 0.0)
    if 0.0 < mu < 1.0:
        k = EARLY_UPDATE_STEPS // 2
        damp = float(okw.get("dampening", 0.0) or 0.0)
        ratio *= 1.0 + (1.0 - damp) * mu * (1.0 - mu ** (k - 1)) / (1.0 - mu)
    return ratio


def _step_limit(ctx: RunContext) -> float:
    """The first update ratio a too-high rate's cure brings the first step to: an adaptive
    optimizer's (:data:`~depthlab.diagnosis.prescriptions.ADAPTIVE_STEP_RATIO_LIMIT`, its first
    step is its largest) or another's (``STEP_RATIO_LIMIT``)."""
    name = str(ctx.settings.get("optimizer", "sgd")).lower().replace("_", "")
    return rx.ADAPTIVE_STEP_RATIO_LIMIT if name in _ADAPTIVE else rx.STEP_RATIO_LIMIT


def first_update_ratio(ctx: RunContext) -> float | None:
    """The first update's ``||dW|| / ||W||``, median over the hidden layers (step 1 of the first
    updates, or the first probed step after 0 when they were not measured); None when not
    measured. It alone scales with the learning rate: ``dW = -lr g_0`` on the initial weights
    for SGD (with momentum too), about ``lr`` per weight for Adam; later ratios are not (a relu
    net at sgd lr 30 whose weights collapsed read 1e7 at a probed step, 300 at step 1)."""
    for r in (_early_ratios(ctx), _update_ratios(ctx)):
        if r is None:
            continue
        per_step = r.groupby(level="step").median()
        per_step = per_step[per_step.index >= 1].sort_index()
        if len(per_step):
            value = float(per_step.iloc[0])
            return value if math.isfinite(value) and value > 0 else None
    return None


def rule_lr_too_high(ctx: RunContext) -> RuleResult:
    """Steps that rewrite >= 10% of the weights: ``||dW|| / ||W||`` per layer (median over the
    layers at each probed step, and at each of the first unprobed updates when measured,
    largest over the steps) at or above ``UPDATE_RATIO_HIGH``, unless the loss fell over them
    (a probed step: the probe batch's loss since the probe before; the first updates: the
    mean training loss over them and the next one below the loss at step 0); or first updates
    at or above ``UPDATE_RATIO_ROSE`` that made the loss worse for good (:func:`_overshot`).
    Not for a run whose probe loss ended below ``LR_FIT`` x a constant prediction's and stayed
    there over its last probes (:func:`_fitted_stably`). The cure divides the rate by
    :func:`~depthlab.diagnosis.prescriptions.lr_step_down` of the first update's ratio
    (:func:`first_update_ratio`, which scales with the rate): 10, or the power of 10 that
    brings one above 10x ``_step_limit`` (0.1; adaptive optimizers 1) to it or below (sgd lr
    1e6 on a saturated tanh net: 1.6e5, lr 0.1; lr/10 left it at 1.6e4)."""
    ur, er = _update_ratios(ctx), _early_ratios(ctx)
    if ur is None and er is None:
        return math.nan, None
    per_step = ur.groupby(level="step").median() if ur is not None else pd.Series(dtype=float)
    early = er.groupby(level="step").median() if er is not None else pd.Series(dtype=float)
    metric = float(pd.concat([per_step, early]).max())
    # the first updates, probed ones too (steps 1..EARLY_UPDATE_STEPS)
    first = pd.concat([early, per_step[(per_step.index >= 1)
                                       & (per_step.index <= EARLY_UPDATE_STEPS)]])
    rose = _overshot(ctx, first) if metric >= UPDATE_RATIO_ROSE else None
    # a run that ended fitted, and stayed so over its last probes, was not held back by its
    # rate: a 3-16-1 ReLU regression at sgd lr 0.1 fell from 44 to 0.41 (chance 32.6) in 20
    # steps through a bump at steps 10-14, and both cures (lr 0.01, adam) ended 25-100x worse
    if not metric >= UPDATE_RATIO_HIGH or _fitted_stably(ctx):
        return (metric, None) if rose is None else (metric, _lr_overshot_finding(
            ctx, rose, first, ur, er, early, per_step, metric))
    probed = [int(t) for t in per_step.index if per_step[t] >= UPDATE_RATIO_HIGH]
    fire_probed = bool(probed) and not _large_steps_lowered_the_loss(ctx, probed)
    big = [int(t) for t in early.index if early[t] >= UPDATE_RATIO_HIGH]
    fire_early, mean, start = False, math.nan, math.nan
    if big:  # measured for the evidence also in a run that diverged later (NaN only where
        mean, start = early_loss_fall(ctx)  # a loss of the first updates was not finite)
        fire_early = (not ctx.history.diverged  # a non-finite loss: the divergence finding's
                      and math.isfinite(mean) and math.isfinite(start) and start > 0
                      and not mean < (1.0 - LR_STEP_FALL) * start)
    if not (fire_probed or fire_early):
        return (metric, None) if rose is None else (metric, _lr_overshot_finding(
            ctx, rose, first, ur, er, early, per_step, metric))
    # steps large only once an over-strong penalty had driven the weights to about 0 (the
    # first updates were not) are the penalty's own (l1: lr * l1 per step whatever the
    # weights): that finding's, not the learning rate's
    if not fire_early and rule_penalty_too_strong(ctx)[1] is not None:
        return metric, None
    # first updates that the penalty's own pull makes large (sgd l2 = 5 at lr 0.05: each step
    # takes lr 2 l2 = 0.5 of every weight) are that finding's too: its cure, the weaker
    # penalty, resolves them, while a 10x smaller lr left the weights shrinking 170x in 100
    # steps ("did not help")
    if fire_early and rule_penalty_too_strong(ctx)[1] is not None and \
            _penalty_step_ratio(ctx) >= max(UPDATE_RATIO_HIGH,
                                            0.5 * float(early[big].median())):
        return metric, None
    lr = float(ctx.settings.get("lr", 0.01))
    changes, text = rx.for_lr_too_high(lr, metric, first_update_ratio(ctx), _step_limit(ctx))
    # the message describes the larger of the two: first updates of 4.8x the weights' norm
    # (Adam lr 1, the loss at 3.8e7) were quoted as a later probed step's 0.29
    use_probed = fire_probed and not (
        fire_early and float(early[big].max()) > float(per_step[probed].max()))
    if use_probed:
        step = int(per_step[probed].idxmax())
        at = ur.xs(step, level="step")
        value = float(per_step[step])
    else:
        step = int(early[big].idxmax())
        at = er.xs(step, level="step")
        value = float(early[step])
    layers = [int(i) for i, v in at.items() if v >= UPDATE_RATIO_HIGH]
    # steps large against weights that started with one value (zeros init: ||W|| = 0 at step
    # 0, any update is large against it) are that init's, whose init_mismatch names it: a
    # sigmoid net's 3.5x at lr 0.01 was called a too-high rate, its cure (0.001) stayed at
    # chance
    zero = ctx.judged_init_ratios()
    if layers and all(zero.get(k) == 0 for k in layers):
        return metric, None
    ev = {"metric": metric, "threshold": UPDATE_RATIO_HIGH, "step": step, "lr": lr,
          "first_update_ratio": first_update_ratio(ctx),
          "median_update_ratio": float(per_step.median()) if len(per_step) else math.nan,
          "n_steps_above": len(probed), "n_steps": int(per_step.size)}
    if big:
        ev.update(n_early_steps_above=int((first >= UPDATE_RATIO_HIGH).sum()),
                  n_early_steps=int(first.size), early_loss_mean=mean, loss_step0=start)
    if use_probed:
        msg = (f"The learning rate {lr:g} is too high: at step {step} an update changed the "
               f"weights by {value:.3g} of their norm (median over layers; about 1e-3 is "
               f"healthy), and {len(probed)} of {per_step.size} probed steps were at or above "
               f"{UPDATE_RATIO_HIGH:g}.")
    else:
        last = min(EARLY_UPDATE_STEPS, len(ctx.history.step_loss) - 1)
        msg = (f"The learning rate {lr:g} is too high: its first updates were large, "
               f"{ev['n_early_steps_above']} of the first {first.size} changed the weights "
               f"by {UPDATE_RATIO_HIGH:g} of their norm or more ({value:.3g} at step {step}, "
               f"median over layers; about 1e-3 is healthy), and the training loss did not "
               f"fall over them (mean {mean:.4g} after updates 1-{last}, {start:.4g} at step "
               f"0): the steps overshoot.")
        if fire_probed:
            msg += (f" {len(probed)} of {per_step.size} probed steps were at or above "
                    f"{UPDATE_RATIO_HIGH:g} too.")
    return metric, Finding("lr_too_high", layers, ev, msg, changes, text,
                           _severity(metric, UPDATE_RATIO_HIGH, log=False))


def _fitted_stably(ctx: RunContext) -> bool:
    """Whether the fixed probe batch's loss ``L_t`` (layer 0 of the probe table) is finite and
    ``L_t < LR_FIT L_c`` (a constant prediction's, ``ctx.chance_loss``) at each of the last
    ``max(2, ceil(LR_FIT_TAIL n))`` of the ``n`` probed steps: the rate let the network fit,
    and an oscillation still under way would have lifted one of them. False when the loss or
    ``L_c`` is unknown, or fewer than 2 steps were probed."""
    t = ctx.table
    try:
        chance = float(ctx.chance_loss)
    except (TypeError, ValueError):
        return False
    if t.empty or "loss" not in t.columns or not (math.isfinite(chance) and chance > 0):
        return False
    try:
        loss = t["loss"].xs(0, level="layer").sort_index()
    except KeyError:
        return False
    if len(loss) < 2:
        return False
    tail = loss.to_numpy(dtype=np.float64)[-max(2, math.ceil(LR_FIT_TAIL * len(loss))):]
    return bool(np.isfinite(tail).all() and (tail < LR_FIT * chance).all())


def _overshot(ctx: RunContext, first: pd.Series) -> dict[str, float] | None:
    """Whether the first updates overshot for good: some of ``first`` (median update ratio
    over layers at steps 1..``EARLY_UPDATE_STEPS``) at or above ``UPDATE_RATIO_ROSE``, the mean
    training loss over those updates ``m >= LOSS_ROSE * L_0`` (the loss at step 0, see
    :func:`early_loss_fall`), and the probe batch's loss at the end at a constant prediction's
    (:func:`stuck_at_chance`) or ``>= (1 - LR_STEP_FALL) L_0``; not for a run whose loss became
    non-finite (the divergence finding's). The numbers (``mean``, ``start``, ``end``,
    ``peak``: the largest of those losses) when so, None otherwise."""
    if ctx.history.diverged or not (first >= UPDATE_RATIO_ROSE).any():
        return None
    mean, start = early_loss_fall(ctx)
    end = probe_loss_ends(ctx)[1]
    if not (math.isfinite(mean) and math.isfinite(start) and start > 0 and math.isfinite(end)
            and mean >= LOSS_ROSE * start):
        return None
    if not (stuck_at_chance(ctx, end) or end >= (1.0 - LR_STEP_FALL) * start):
        return None
    losses = np.asarray(ctx.history.step_loss, dtype=np.float64)[1:EARLY_UPDATE_STEPS + 1]
    return {"mean": mean, "start": start, "end": end, "peak": float(losses.max())}


def _lr_overshot_finding(ctx: RunContext, rose: dict[str, float], first: pd.Series,
                         ur: pd.Series | None, er: pd.Series | None, early: pd.Series,
                         per_step: pd.Series, metric: float) -> Finding:
    """lr_too_high's finding for first updates that made the loss worse for good
    (:func:`_overshot`): the largest of ``first``, its layers at or above
    ``UPDATE_RATIO_ROSE``, severity against that threshold."""
    lr = float(ctx.settings.get("lr", 0.01))
    changes, text = rx.for_lr_too_high(lr, metric)
    step = int(first.idxmax())
    value = float(first.max())
    at = er.xs(step, level="step") if step in early.index else ur.xs(step, level="step")
    layers = [int(i) for i, v in at.items() if v >= UPDATE_RATIO_ROSE]
    n_above = int((first >= UPDATE_RATIO_ROSE).sum())
    last = min(EARLY_UPDATE_STEPS, len(ctx.history.step_loss) - 1)
    chance = ctx.chance_loss
    ended = (f"ended at {rose['end']:.4g}, a constant prediction's loss ({chance:.4g})"
             if stuck_at_chance(ctx, rose["end"]) else
             f"ended at {rose['end']:.4g}, no lower than at the start")
    ev = {"metric": metric, "threshold": UPDATE_RATIO_ROSE, "step": step, "lr": lr,
          "median_update_ratio": float(per_step.median()) if len(per_step) else math.nan,
          "n_early_steps_above": n_above, "n_early_steps": int(first.size),
          "early_loss_mean": rose["mean"], "loss_step0": rose["start"],
          "early_loss_peak": rose["peak"], "loss_end": rose["end"]}
    msg = (f"The learning rate {lr:g} is too high: its first updates made the training loss "
           f"worse, from {rose['start']:.4g} at step 0 up to {rose['peak']:.4g} (mean "
           f"{rose['mean']:.4g} after updates 1-{last}), {n_above} of the first {first.size} "
           f"changed the weights by {UPDATE_RATIO_ROSE:g} of their norm or more ({value:.3g} "
           f"at step {step}, median over layers; about 1e-3 is healthy), and the probe loss "
           f"{ended}: the steps overshot and training did not recover.")
    return Finding("lr_too_high", layers, ev, msg, changes, text,
                   _severity(metric, UPDATE_RATIO_ROSE, log=False))


def rule_penalty_too_strong(ctx: RunContext) -> RuleResult:
    """The weight penalty holds the network at a constant prediction: ``fit``'s ``l1``/``l2``
    were given (``ctx.settings``), the hidden layers' weight std shrank by ``PENALTY_SHRINK``
    or more from step 0 to the end (``weight_std``, median over the layers of
    ``std_0 / std_end``: the metric) and the probe batch's loss did not end below a constant
    prediction's (:func:`stuck_at_chance`), or shrank ``PENALTY_ACTING`` or more while the
    penalty's gradient outweighed the data's ``PENALTY_DOMINANCE`` times in every hidden layer
    (:func:`penalty_dominance`: Adam, RMSprop); the optimizer's ``weight_decay`` (in
    ``optimizer_kwargs``) counts as a penalty too. An ``l2`` penalty alone scales the weights by
    ``1 - 2 lr l2`` per SGD step, an ``l1`` moves each ``lr l1`` towards 0: when that outweighs
    the data's gradient the weights go to 0 and the output to a constant. NaN when no penalty
    was given or no weight std was probed (the torch doctor: its weight decay is the
    optimizer's)."""
    penalties = {k: float(ctx.settings.get(k, 0.0) or 0.0) for k in ("l1", "l2")}
    okw = ctx.settings.get("optimizer_kwargs") or {}
    if isinstance(okw, dict):  # the optimizer's own weight decay shrinks the weights alike
        penalties["weight_decay"] = float(okw.get("weight_decay", 0.0) or 0.0)
    penalties = {k: v for k, v in penalties.items() if v > 0}
    if not penalties or not ctx.steps:
        return math.nan, None
    first, last = ctx.at(ctx.steps[0], "weight_std"), ctx.at(ctx.end, "weight_std")
    both = pd.concat([first, last], axis=1, keys=["start", "end"]).dropna()
    both = both[(both["start"] > 0) & np.isfinite(both["start"]) & np.isfinite(both["end"])]
    if both.empty:
        return math.nan, None
    with np.errstate(divide="ignore"):
        shrink = float(np.median(both["start"].to_numpy() / both["end"].to_numpy()))
    dominance = penalty_dominance(ctx, penalties, both["end"])
    if not (shrink >= PENALTY_SHRINK or (shrink >= PENALTY_ACTING
                                         and dominance >= PENALTY_DOMINANCE)):
        return shrink, None
    start, end = probe_loss_ends(ctx)
    if not stuck_at_chance(ctx, end):
        return shrink, None
    adaptive = _penalty_step_ratio(ctx) == 0.0 and str(
        ctx.settings.get("optimizer", "")).lower().replace("_", "") in _ADAPTIVE
    travel = math.nan  # sgd's l1: lr l1 T in initial weight stds (see penalty_weakening)
    if not adaptive and penalties.get("l1", 0.0) > 0 and float(np.median(both["start"])) > 0:
        travel = (float(ctx.settings.get("lr", 0.01)) * penalties["l1"] * ctx.end
                  / float(np.median(both["start"])))
    changes, text = rx.for_penalty_too_strong(
        penalties, shrink, okw, PENALTY_SHRINK, dominance if adaptive else math.nan,
        PENALTY_DOMINANCE, travel)
    named = ", ".join(f"{k} = {v:g}" + (" (the optimizer's)" if k == "weight_decay" else "")
                      for k, v in penalties.items())
    ev = {"metric": shrink, "threshold": PENALTY_SHRINK, "weight_shrink": shrink,
          "weight_std_start": float(np.median(both["start"])),
          "weight_std_end": float(np.median(both["end"])), "loss_step0": start,
          "loss_end": end, "chance_loss": ctx.chance_loss, "penalty_dominance": dominance,
          **penalties}
    pull = (f"; at the end its gradient outweighed the data's {dominance:.3g}x in every hidden "
            "layer" if dominance >= PENALTY_DOMINANCE else "")
    msg = (f"The weight penalty ({named}) holds the network at a constant prediction: the "
           f"hidden layers' weights shrank {shrink:.3g}x in {_count(ctx.end, 'step')} (weight "
           f"std {ev['weight_std_start']:.3g} at the start, {ev['weight_std_end']:.3g} at the "
           f"end, medians over layers){pull}, and the probe batch's loss went from {start:.4g} "
           f"to {end:.4g}, not below a constant prediction's {ctx.chance_loss:.4g}.")
    layers = [int(i) for i in both.index]
    strength = max(shrink / PENALTY_SHRINK, (dominance / PENALTY_DOMINANCE)
                   if dominance >= PENALTY_DOMINANCE else 0.0)
    return shrink, Finding("penalty_too_strong", layers, ev, msg, changes, text,
                           _severity(strength, 1.0))


def penalty_dominance(ctx: RunContext, penalties: dict[str, float],
                      weight_std: pd.Series) -> float:
    """How far the penalty's gradient outweighs the data's at the end, in the hidden layer
    where it does least: ``min_l std(P_l) / std(dL/dW_l)`` with ``std(P_l) = 2 l2 std(W_l) +
    l1 + wd std(W_l)`` (``l2 sum w^2`` gives ``2 l2 w``, ``l1 sum |w|`` gives ``l1 sign(w)``,
    a coupled ``weight_decay`` adds ``wd w`` to the gradient) and ``dL/dW_l`` the probe batch's
    data gradient (``weight_grad_std``). An adaptive optimizer (Adam, RMSprop) moves each
    weight about ``lr`` per step whatever the gradient's size, so a dominant penalty shrinks
    the weights only ~``lr`` per step (1.4x in 200 steps at lr 1e-3) while the net sits at a
    constant prediction. A decoupled decay (AdamW) is not in the gradient: NaN for it alone,
    as without a probed data gradient."""
    okw = ctx.settings.get("optimizer_kwargs") or {}
    name = str(ctx.settings.get("optimizer", "")).lower().replace("_", "")
    decoupled = "adamw" in name or bool(isinstance(okw, dict)
                                        and okw.get("decoupled_weight_decay"))
    wd = 0.0 if decoupled else penalties.get("weight_decay", 0.0)
    scale = 2.0 * penalties.get("l2", 0.0) + wd
    l1 = penalties.get("l1", 0.0)
    if scale == 0.0 and l1 == 0.0:
        return math.nan
    grads = ctx.at(ctx.end, "weight_grad_std").reindex(weight_std.index)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (scale * weight_std.to_numpy() + l1) / grads.to_numpy()
    return float(np.min(ratio)) if np.isfinite(ratio).any() and not np.isnan(ratio).any() \
        else math.nan


def far_from_fitted(ctx: RunContext, end: float) -> bool:
    """Whether the probe loss ``end`` lies in ``[LR_LOW_FIT L_c, CHANCE_ABOVE L_c]``, ``L_c`` a
    constant prediction's loss (``ctx.chance_loss``): not fitted (a net that learns ends below
    half a constant prediction's) and not exploded (:func:`stuck_at_chance`'s upper bound);
    False when either is unknown."""
    chance = ctx.chance_loss
    return (math.isfinite(chance) and chance > 0 and math.isfinite(end)
            and LR_LOW_FIT * chance <= end <= CHANCE_ABOVE * chance)


def chained_dropout_rates(net: Network) -> list[float]:
    """The rates of the dropout layers (inverted and alpha) among ``net``'s own layers, in
    order: those the signal passes one after another (a residual branch's dropout is
    passed by on the skip path and is not listed). Another network (the torch doctor's view
    of a model) lists its own by a ``dropout_chain()`` method, ``[(p, alpha), ...]``."""
    if not isinstance(net, Network):
        return [float(p) for p, _ in _dropout_chain(net)]
    return [float(layer.p) for layer in net.layers
            if isinstance(layer, Dropout) and float(layer.p) > 0.0]


def _dropout_chain(net: Any) -> list[tuple[float, bool]]:
    """``net.dropout_chain()`` where ``net`` has it (rate and alpha flag of each dropout the
    signal passes in turn), else ``[]``."""
    chain = getattr(net, "dropout_chain", None)
    return list(chain()) if callable(chain) else []


def chained_alpha_dropout(net: Network) -> list[bool]:
    """Which of :func:`chained_dropout_rates`' layers are alpha dropout (in the same order)."""
    if not isinstance(net, Network):
        return [bool(a) for _, a in _dropout_chain(net)]
    return [isinstance(layer, AlphaDropout) for layer in net.layers
            if isinstance(layer, Dropout) and float(layer.p) > 0.0]


def dropout_noise(rates: list[float], alpha: list[bool] | None = None) -> float:
    """The compounded noise of the dropout layers of ``rates``, as a multiple of the signal's
    variance: ``prod_i g_i - 1``, each layer keeping ``1 / g_i`` of its output's variance as
    signal. Inverted dropout (``alpha[i]`` False, the default): ``g = 1 / (1 - p)`` (a mask
    ``m / (1 - p)``, ``m`` Bernoulli with ``P(m = 1) = 1 - p``, has mean 1 and second moment
    ``1 / (1 - p)``; independent ones multiply). Alpha dropout (``alpha[i]`` True, Klambauer et
    al. 2017): ``y = A (x m + a' (1 - m)) + B``, ``a' = -lambda alpha``, on an input at SELU's
    fixed point (mean 0, variance 1) keeps ``A^2 (1 - p)^2`` of the variance as signal and adds
    ``A^2 p (1 - p) (1 + a'^2)`` of noise, so ``g = (1 + p a'^2) / (1 - p)``: at p = 0.1, 1.45
    against inverted dropout's 1.11 (4 SELU layers of 512 at 0.1: 3.5x, measured 3.8x)."""
    flags = list(alpha) if alpha is not None else [False] * len(rates)
    return math.prod(rx.dropout_gain(p, a) for p, a in zip(rates, flags)) - 1.0


def rule_dropout_too_strong(ctx: RunContext) -> RuleResult:
    """Dropout whose compounded noise (:func:`dropout_noise` of
    :func:`chained_dropout_rates`: the metric) exceeds ``DROPOUT_NOISE`` times the signal
    while the probe batch's loss stays at a constant prediction's (:func:`stuck_at_chance`) and
    the steps were not tiny (``1e-3 / largest update ratio`` at most
    ``DROPOUT_TINY_STEPS``): the top layers see mostly noise and the network settles on the
    constant prediction. NaN without dropout (or without the network's layers: the torch
    doctor's view of a model that is not a plain ``nn.Sequential``)."""
    rates = chained_dropout_rates(ctx.net)
    if not rates:
        return math.nan, None
    alpha = chained_alpha_dropout(ctx.net)
    noise = dropout_noise(rates, alpha)
    if not noise > DROPOUT_NOISE:
        return noise, None
    start, end = probe_loss_ends(ctx)
    if not stuck_at_chance(ctx, end):
        return noise, None
    ur = _update_ratios(ctx)
    if ur is None or not UPDATE_RATIO_HEALTHY / float(ur.max()) <= DROPOUT_TINY_STEPS:
        return noise, None  # steps too small to learn anything: the learning rate's finding
    changes, text = rx.for_dropout_too_strong(
        rates, DROPOUT_NOISE, float(ctx.config.get("dropout") or 0.0),
        float(ctx.config.get("input_dropout") or 0.0), alpha=any(alpha))
    chance = ctx.chance_loss
    ev = {"metric": noise, "threshold": DROPOUT_NOISE, "rates": rates,
          "n_dropout_layers": len(rates), "loss_step0": start, "loss_end": end,
          "chance_loss": chance}
    shown = (f"rate {rates[0]:g}" if len(set(rates)) == 1
             else "rates " + ", ".join(f"{p:g}" for p in rates))
    each = ("each alpha dropout layer adds noise of variance p (1 + (lambda alpha)^2)/(1 - p) "
            "relative to its signal" if all(alpha) else
            "each inverted dropout mask adds noise of variance p/(1 - p) relative to its input"
            if not any(alpha) else "each dropout layer adds noise (inverted: p/(1 - p) of its "
            "input's variance, alpha: p (1 + (lambda alpha)^2)/(1 - p))")
    msg = (f"Dropout at {shown} in {_count(len(rates), 'layer')} the signal passes in turn "
           f"buries it: {each}, compounding to {noise:.3g}x the signal's variance; the probe "
           f"batch's loss went from {start:.4g} to {end:.4g}, {end / chance:.3g}x a constant "
           f"prediction's {chance:.4g}: the network settled on a constant prediction.")
    return noise, Finding("dropout_too_strong", [], ev, msg, changes, text,
                          _severity(noise, DROPOUT_NOISE))


def rule_lr_too_low(ctx: RunContext) -> RuleResult:
    """No hidden layer's update ever reached ``1e-3 / LR_SHORTFALL`` of its weights' norm and
    the probe batch's loss ended at ``LR_LOW_FIT`` (0.5) x a constant prediction's or above
    (:func:`far_from_fitted`; see ``LR_SHORTFALL``, ``LR_LOW_FIT``). The metric, ``1e-3 /
    largest update ratio``, is measured whenever update ratios are."""
    ur = _update_ratios(ctx)
    if ur is None:
        return math.nan, None
    largest = float(ur.max())
    metric = UPDATE_RATIO_HEALTHY / largest if largest > 0 else math.inf
    if not (metric > LR_SHORTFALL and largest > 0):  # nothing moved at all: no step size's
        return metric, None
    # small steps that small gradients explain (dead units, vanishing gradients, saturation,
    # a bounded output) are those findings' symptom, not a learning rate's
    # (30 Glorot ReLU layers: 2e-5 per step; ReLUs with biases at -3: 0 .. 1e-6)
    if any(RULES[k](ctx)[1] is not None for k in _LR_TOO_LOW_CAUSES):
        return metric, None
    chance = ctx.chance_loss
    start, end = probe_loss_ends(ctx)
    if not far_from_fitted(ctx, end):
        return metric, None
    lr = float(ctx.settings.get("lr", 0.01))
    factor = 10.0 ** max(1, math.ceil(math.log10(metric)))
    changes, text = rx.for_lr_too_low(lr, factor, largest)
    ev = {"metric": metric, "threshold": LR_SHORTFALL, "largest_update_ratio": largest,
          "lr": lr, "loss_step0": start, "loss_end": end, "chance_loss": chance,
          "fit_threshold": LR_LOW_FIT}
    msg = (f"The learning rate {lr:g} is too low: no hidden layer's update exceeded "
           f"{largest:.2g} of its weights' norm in {_count(ctx.end, 'step')} (about 1e-3 is "
           f"healthy), and the probe batch's loss went from {start:.4g} to {end:.4g}, "
           f"{end / chance:.3g}x a constant prediction's {chance:.4g} (a net that learns ends "
           f"below {LR_LOW_FIT:g}x).")
    return metric, Finding("lr_too_low", [], ev, msg, changes, text,
                           _severity(metric, LR_SHORTFALL))


def _bn_loss_gap(ctx: RunContext) -> float:
    """``ln(L_inference / max(L_batch, DIVERGENCE_FLOOR x L_0))``: how far the probe batch's
    loss in inference mode is above its loss with the batch's own statistics (``L_0``: the
    probe loss at step 0, when recorded, so that a fitted network's near-zero losses are no
    large ratio); NaN when not measured."""
    b = ctx.bn_losses.get("loss_batch_stats", math.nan)
    i = ctx.bn_losses.get("loss_inference", math.nan)
    if not (math.isfinite(b) and b >= 0) or math.isnan(i):
        return math.nan
    if math.isinf(i):
        return math.inf
    floor = 0.0
    t = ctx.table
    if not t.empty and "loss" in t.columns and ctx.steps:
        try:
            l0 = float(t["loss"].xs(0, level="layer").get(ctx.steps[0], math.nan))
        except KeyError:
            l0 = math.nan
        if math.isfinite(l0) and l0 > 0:
            floor = DIVERGENCE_FLOOR * l0
    ref = max(b, floor)
    return math.log(i / ref) if ref > 0 and i > 0 else math.nan


def _dropout_variance_shift(ctx: RunContext, bn_layer: int, drift: dict[str, float]) -> str:
    """The explanation of a variance drift that dropout before BN layer ``bn_layer`` causes,
    or ``""``: the running averages are taken on training batches with dropout on, whose
    variance is about ``1/(1 - p)`` times what inference (dropout off) feeds the layer
    (Li et al. 2019's variance shift; dropout 0.5 before 5 BN layers: the running variance
    e^0.74 .. e^0.95 the probe batch's, ln 2 = 0.69, the first BN layer, before any dropout,
    e^-0.05), which the message called a lag."""
    p = ctx.config.get("dropout") or 0.0
    p_in = ctx.config.get("input_dropout") or 0.0
    if not isinstance(p, int | float) or not isinstance(p_in, int | float):
        return ""
    rate = p_in if bn_layer == 1 else max(p, p_in)
    expected = -math.log1p(-rate) if 0.0 < rate < 1.0 else 0.0
    if not (expected > 0 and drift["log_var_ratio"] > 0.5 * expected
            and drift["log_var_ratio"] >= drift["mean_shift"]):
        return ""
    return (f" Dropout {rate:g} before it: the running averages are taken on training batches "
            f"with dropout on, whose variance is about 1/(1 - p) = {1.0 / (1.0 - rate):.3g}x "
            "what inference (dropout off) feeds the layer (dropout's variance shift).")


def rule_bn_drift(ctx: RunContext) -> RuleResult:
    """Running (or population) statistics off the probe batch's: the largest per-layer drift
    (see ``BN_DRIFT``), or the log of the inference / batch-statistics loss ratio of the probe
    batch (:func:`_bn_loss_gap`) when larger: small drifts compound over many BN layers."""
    if not ctx.bn_drift:
        return math.nan, None
    scores = [max(d["mean_shift"], d["log_var_ratio"]) for d in ctx.bn_drift]
    layer_metric = float(np.nanmax(scores)) if np.any(np.isfinite(scores)) else math.nan
    gap = _bn_loss_gap(ctx)
    metric = layer_metric
    if gap > BN_DRIFT and not gap <= layer_metric:
        metric = gap
    few = ctx.probe_examples is not None and ctx.probe_examples < BN_DRIFT_MIN_EXAMPLES
    if not metric > BN_DRIFT or few:  # few: the batch's own statistics are that noisy
        return metric, None
    worst = int(np.nanargmax(scores)) if np.any(np.isfinite(scores)) else 0
    layers = [i + 1 for i, s in enumerate(scores) if s > BN_DRIFT]
    if not layers:  # only the compounded drift: every BN layer adds to it
        layers = list(range(1, len(scores) + 1))
    d = ctx.bn_drift[worst]
    population = ctx.config.get("bn_inference") == "population"
    changes, text = rx.for_population_drift() if population else rx.for_bn_drift(ctx.config)
    ev = {"metric": metric, "threshold": BN_DRIFT, "worst_layer": worst + 1,
          "mean_shift": d["mean_shift"], "log_var_ratio": d["log_var_ratio"],
          "layer_drift": layer_metric, "loss_gap": gap, **ctx.bn_losses}
    if metric == gap and not layer_metric > BN_DRIFT:
        kind_of = "population" if population else "running"
        msg = (f"Batch-norm {kind_of} statistics break inference: the probe batch's loss is "
               f"{ctx.bn_losses['loss_inference']:.4g} in inference mode but "
               f"{ctx.bn_losses['loss_batch_stats']:.4g} with its own batch statistics "
               f"({math.exp(gap):.3g}x); no single BN layer drifts much (at most "
               f"{layer_metric:.2f}, layer {worst + 1}), but the drifts of the "
               f"{len(scores)} BN layers compound.")
        return metric, Finding("bn_drift", layers, ev, msg, changes, text,
                               _severity(metric, BN_DRIFT, log=False))
    shift = _dropout_variance_shift(ctx, worst + 1, d)
    msg = ((f"Batch-norm population statistics (the whole training set's) differ from the "
            f"probe batch's: in BN layer {worst + 1} their mean is off by "
            f"{d['mean_shift']:.2f} batch std and the variance by a factor "
            f"{math.exp(d['log_var_ratio']):.2f} (mean over units).") if population else
           (f"Batch-norm running statistics {'differ from' if shift else 'lag'} the batch "
            f"statistics: in BN layer {worst + 1} "
            f"the running mean is off by {d['mean_shift']:.2f} batch std and the variance by "
            f"a factor {math.exp(d['log_var_ratio']):.2f} (mean over units).{shift}"))
    return metric, Finding("bn_drift", layers, ev, msg, changes, text,
                           _severity(metric, BN_DRIFT, log=False))


@dataclass(frozen=True)
class Rule:
    """A finding kind with its metric (lower is healthier), threshold and check.
    ``rule(ctx)`` returns ``(metric, Finding or None)``."""

    kind: str
    metric: str
    threshold: float
    check: Callable[[RunContext], RuleResult]

    def __call__(self, ctx: RunContext) -> RuleResult:
        return self.check(ctx)


RULES: dict[str, Rule] = {r.kind: r for r in (
    Rule("bounded_logits", "lowest reachable loss of an example", LOGIT_FLOOR,
         rule_bounded_logits),
    Rule("unscaled_inputs", "input scale (larger of max feature RMS / limit, mean offset / 5)",
         1.0, rule_unscaled_inputs),
    Rule("unscaled_targets", "target scale (larger of max column RMS / 10, mean offset / 2)",
         1.0, rule_unscaled_targets),
    Rule("penalty_too_strong", "weight shrinkage (std at step 0 / at the end)",
         PENALTY_SHRINK, rule_penalty_too_strong),
    Rule("lr_too_high", "largest update ratio ||dW||/||W||", UPDATE_RATIO_HIGH,
         rule_lr_too_high),
    Rule("divergence", "loss rise (end / min(step 0, best))", DIVERGENCE_RISE, rule_divergence),
    Rule("init_mismatch", "init variance factor", INIT_MISMATCH, rule_init_mismatch),
    Rule("exploding_activations", "activation std growth (last / first hidden layer, step 0)",
         FORWARD_GROWTH, rule_exploding_activations),
    Rule("dropout_too_strong", "dropout noise (prod 1 / (1 - p) - 1)", DROPOUT_NOISE,
         rule_dropout_too_strong),
    Rule("lr_too_low", "update shortfall (1e-3 / largest ||dW||/||W||)", LR_SHORTFALL,
         rule_lr_too_low),
    Rule("saturation", "max saturated fraction", SATURATION_FRAC, rule_saturation),
    Rule("vanishing_gradients", "depth in gradient depth scales", GRADIENT_DEPTH_SCALES,
         rule_vanishing),
    Rule("exploding_gradients", "depth in gradient depth scales", GRADIENT_DEPTH_SCALES,
         rule_exploding),
    Rule("dead_relu", "max dead fraction", DEAD_FRAC, rule_dead_relu),
    Rule("bn_drift", "BN drift", BN_DRIFT, rule_bn_drift),
    Rule("mean_shift", "max |mean activation|", MEAN_SHIFT, rule_mean_shift),
)}
"""Every rule, in priority order (the order of the findings before verification)."""

_LR_TOO_LOW_CAUSES = ("bounded_logits", "unscaled_inputs", "unscaled_targets", "saturation",
                      "vanishing_gradients", "dead_relu", "dropout_too_strong")
"""The rules whose finding explains small updates better than the learning rate does: small
gradients (squashed outputs, flat activations, dead units) or inputs whose cure comes first
(an init_mismatch alone does not: a 3-16-16-2 relu net with Glorot weights, 0.16x He's, at
lr 1e-5 stayed at 0.93 above ln 2 and moved 1e-5 per step)."""

KINDS: tuple[str, ...] = tuple(RULES)


def evaluate(ctx: RunContext) -> tuple[list[Finding], dict[str, float]]:
    """Run every rule: (findings in priority order, metric per kind)."""
    findings, metrics = [], {}
    with np.errstate(all="ignore"):
        for kind, rule in RULES.items():
            metric, finding = rule(ctx)
            metrics[kind] = metric
            if finding is not None:
                findings.append(finding)
    return findings, metrics
