"""``predict(model, x)``: the mean-field (variance-propagation) prediction of each layer's
statistics at initialization, from the model's actual weights, beside the measurement.

For a chain of Linear/Conv layers ``s_l = W_l a_{l-1} + b_l``, each optionally followed by an
elementwise activation module ``a_l = f_l(s_l)`` (:data:`depthlab.torch.layers.ACTIVATIONS`;
``a_l = s_l`` without one; an activation the forward applies itself, ``F.relu(fc1(x))``, as
that module), with shape-only operations between them (``nn.Flatten``, ``torch.flatten``,
``x.view``, ``x.reshape``, ``x.flatten``: the values, reshaped or copied), and
treating pre-activations as Gaussians (wide layers; Glorot & Bengio 2010, He et al.
2015, Poole et al. 2016 -- the rules of :mod:`depthlab.theory.variance`):

forward   ``q_l = Var(s_l) = n_l Var(W_l) E[a_{l-1}^2] + Var(b_l)`` around the mean
          ``n_l mean(W_l) E[a_{l-1}] + mean(b_l)`` (common to every unit: a constant bias, or
          weights with a nonzero mean), ``E[a_0^2]`` = mean of ``x^2``;
          ``n_l`` = fan-in (``in_features``; ``in_channels / groups * prod(kernel)``), ``v_l``
          = mean of ``W_l^2`` (the actual weights), ``E[a_l^2] = E[f_l(s)^2]`` for ``s`` of
          that mean and variance by Gaussian quadrature
          (:func:`depthlab.theory.gaussian.normal_rule`); a weight mean that is more than
          sampling noise and not small against the spread is refused (:func:`_weight_mean`)
backward  ``Var(g_l) = m_{l+1} v_{l+1} E[f_l'(s)^2] Var(g_{l+1})``, ``g_l = dL/ds_l``, with
          ``m_{l+1}`` the number of outputs each input entry feeds (``out_features``;
          ``out_channels / groups * prod(kernel) / prod(stride)``); with zero padding both are
          averaged over positions (a border position reads fewer taps: :func:`_fans`).
          ``ConvTranspose1d/2d/3d`` (weight ``(in_channels, out_channels / groups,
          *kernel)``): the other way round, fan-in ``in_channels / groups * prod(kernel) /
          prod(stride)`` and fan-out ``out_channels / groups * prod(kernel)`` in the interior,
          with the map of taps each output position receives (kernel 3, stride 2: 1 and 2 in
          turn; fewer at the cropped border) carried as a zero-padded conv's border below
          (not ``torch.nn.init``'s fans, which read its weight as a conv's).
border    zero padding also lowers a conv output's variance at the border, which the next
          conv's border outputs read with fewer taps: along a chain of zero-padded convs
          without BatchNorm or pooling between them, the relative map ``u(p)`` of ``E[a^2]``
          per position is carried (``q(p) = n v (A u)(p) E[a^2] + Var(b)``, ``A`` the conv's
          tap count map, :func:`_tap_matrices`; ``E f(s)^2`` and ``E f'(s)^2`` at ``q(p)``,
          on 1% levels, for an activation that is not homogeneous) and the fan-in multiplied
          by ``mean(A u) / mean(A 1)``; backward likewise the map of ``Var(g)`` with ``A^T``
          times ``E f'^2`` per position (averaged fans alone compound: 6 He/ReLU convs of 64
          channels on 8x8 inputs had pre_std of the 6th 0.88x and grad_pre_std of the 1st
          0.90x the measurement, now within 5% as with circular padding; GELU, 4 convs of 128
          on 12x12 with groups 4: 0.89x / 0.86x, now 0.97x / 0.92x). A conv without padding
          reads such a map too (its border inputs, and strided its skipped ones, fewer times:
          a stride-2 conv on a ConvTranspose's 1- and 2-tap rows reads the 2-tap rows twice;
          its pre_std was 1.10-1.16x the prediction and the layers below 1.17x, now within 6%).
unit      a unit's value is ``s = shift + b_j + W_j E_batch[a] + N(0, qb)``: its own bias (the
          layer's actual biases as quantile groups; PyTorch's default uniform bias is not
          Gaussian, and where it dominates a cubic-like Tanhshrink's ``E f(s)^2`` is 4x that of
          a Gaussian of the same variance: act_std was predicted 1.95x) and the weights acting
          on the inputs' batch means (images in [0, 1]) are constant over the batch, so the
          unit's batch variance ``qb`` (which a later BatchNorm divides by) is the variance
          about that offset, averaged over units (:func:`_unit_nodes`; with the offset counted
          in it a BN gradient after inputs of mean 1 was 0.72x the measurement, now 0.91-0.98x).
          ``E f``, ``E f^2``, ``E f'^2`` (and the distribution a skip carries) are of the
          mixture over units and examples, ``b_j + N(shift, n Var(W) E[a^2])``, one Gaussian
          rule per bias group; the units' means ``W_j E_batch[a]`` as atoms (64 equal-mass
          atoms of their Gaussian, not 16 Gauss-Hermite nodes ~0.5 sd apart) only for what a
          unit holds over the batch (``qb``, a max pool's window). With the units' means far
          wider than ``qb`` (inputs of mean 5 and std 0.01, a batch of one) atoms resolve no
          feature of ``f`` narrower than their spacing: layer 1's grad_pre_std was 1.6x (tanh)
          and 8.5x (Hardtanh) the prediction, a tanh residual net's 2.4x, a tanh layer before
          a max pool 1.5x; now 0.91-1.0x
groups    the examples are propagated as :data:`GROUPS` quantile groups of their mean square
          ``|x_i|^2 / d`` (:func:`_input_groups`), since ``E_i f(sqrt(q_i) z)^2 !=
          E f(sqrt(E q_i) z)^2`` for a saturating activation (inputs with log-normal lengths,
          sigma 0.5: tanh act_std 1.10x -> 1.00x, gelu 0.95x -> 1.00x; Tanhshrink 0.01-0.91x ->
          0.79-0.99x), each through the same chain (a BatchNorm divides every group by the
          whole batch's variance, from a first run over the whole batch), and the rows
          combined (:func:`_combine`); ReLU/linear layers without offsets are unchanged.
          Not modelled: the finite-width spread that each layer adds to an example's
          length (relative ``~sqrt(Var f^2 / n) / E f^2`` per layer), which compounds where
          the length map is strongly convex (Tanhshrink near 0 with He init: act_std of
          layer 5 predicted 0.1x at width 128; GELU with He init, whose ``q_{l+1} / q_l``
          rises from 0.58 at ``q = 0.1`` to 0.99 at 16: grad_pre_std of layer 1 of 10 at width
          128 predicted 0.71x the mean over 30 seeds). Where the map is linear (ReLU, He
          init) the prediction is the mean over random draws, and one network's variances
          walk away from it by ``~exp(+-sqrt(L Var f^2 / (n (E f^2)^2)))`` once deep layers
          make the examples alike (ReLU: ``Var f^2 / (E f^2)^2 = 5``; depth 20, width 256:
          layer 20's pre_std measured 0.57-1.11x the prediction over 6 seeds, a typical net
          below it, while 40 seeds' mean variances at width 64, depth 10 agree within 10% on
          every hidden layer). For a plain chain of Linear layers with ReLU, LeakyReLU or no
          activation, ``attrs["approximation"]`` names that spread (sd of log ``pre_std`` at
          the last hidden layer, :func:`_width_spread`, the examples' correlation carried up
          from the inputs) where it exceeds 10% (ReLU, 24 layers of 48: noted 0.64, measured
          0.66 over 10 seeds, pre_std 0.27-2.5x the prediction; 12 of 128: 0.23, measured
          0.21; 6 of 256: measured 0.06, not noted).
finite n  ``pre_std`` and ``act_std`` are measured about the layer's own average over its
          ``n`` units (``out_features``, ``out_channels``), which misses ``1/n`` of the spread
          of the units' random means ``W_j E_batch[a]`` (:func:`_finite_units`); the
          prediction is that expected measurement (a one-unit output after ReLU was 1.21x).

BatchNorm (``Linear/Conv -> BatchNorm1d/2d/3d -> [activation]``, training mode: batch
statistics; the module's own per-channel ``gamma_c``, ``beta_c``; Yang et al. 2019 and
:mod:`depthlab.theory.batchnorm`): BN divides a unit by its batch variance ``qb``, which
excludes the unit's constant mean, so ``qb = n v Var_batch(a_{l-1})`` (+ for zero-padded convs
the spread of the mean over positions, :func:`_fans`); its output is ``N(beta_c, gamma_c^2
qb / (qb + eps))`` per channel (large width and batch), the activation's moments are channel
averages, and ``Var(dL/dh) = mean_c gamma_c^2 E[f'(s_c)^2] mean_c E[(B - 2 + r^2) / (B (var_c +
eps))] Var(dL/da)`` (``qb_c = n v_c Var_batch(a)`` from channel ``c``'s own mean squared weight
``v_c``; BN's backward removes the batch mean and the direction of ``xhat``, ``r = eps / (var_c +
eps)`` of it left, over the ``B`` values a channel is normalized over, and the channel's batch
variance ``var_c = qb_c chi2_{B-1} / B`` has ``E[1 / var_c] = B / ((B - 3) qb_c)``:
:func:`depthlab.torch.propagation._bn_inverse`; ``1 / (qb_c + eps)`` for a large batch, while
``(B - 2) / (B - 3)`` per BN layer compounded: 8 BN-ReLU layers of 256, layer 1's
``grad_pre_std`` was predicted 0.09x / 0.53x / 0.77x the measurement at batch 4 / 8 / 16, now
0.98x / 0.99x / 1.00x). A plain BN
chain thus grows the squared gradient by ``bn_gradient_factor(f, gamma, beta).growth_sq`` per
equal-width layer (ReLU: ``pi / (pi - 1)``); where that function reports ``covered = False``
(identity, gelu, swish: the batch does not stay Gaussian) the prediction is not reliable.
Measured (10 BN layers of 128, batch 128, CE loss, 3 seeds): ReLU within 2%; LeakyReLU(0.3),
SELU and tanh with ``gamma = 0.5, beta = 0.3`` 0.89-0.92x at the first layer, the shortfall
built up in the 3-4 layers below the output and constant further down (not explained here:
these activations whiten the batch slowly, ``whitening_depth`` 10, 34 and ~14 layers, but the
shortfall sits near the output, not the input; batch 512 gives 0.93-0.95x, width 512 no
better; the NumPy nets of ``dl.mlp(..., batchnorm=True)`` show the same, 0.92x).

Residual blocks ``y = post(x + F(x))`` or ``post(P(x) + F(x))`` (``F`` a chain as above, BN
included; ``P`` the identity or a projection shortcut, e.g. torchvision's 1x1 conv + BN
``downsample``; ``post`` an optional activation, a module or a function the block applies to
the sum, ``F.relu(out)`` after ``out += shortcut``; the sum may be built on a copy,
``x = x.clone(); x += F(x)``). The two paths have independent weights, so
at initialization a unit's two summands are independent: the distribution of the unit's value
(nodes and weights: :func:`_gauss_dist`, kept to :data:`depthlab.torch.pooling.NODES`
quantile groups by :func:`depthlab.torch.pooling.compress`) is carried along the skip and
convolved with the branch's Gaussian output
(a ReLU output's skewed, non-negative shape is kept; batch variances add). Backward,
``Var(dL/dx) = Var(dL/dx through P) + Var(dL/dx through F)``, and through an identity skip
the gradient keeps the dependence on the unit's own value (a unit active in one block is
likely active in the next, so its ``post'`` masks are correlated): ``V_b(x) =
E_F[post'(x + F)^2 V_{b+1}(post(x + F))] + Var(dL/dx through F)``, interpolated on the
nodes, and the layer that feeds the first skip takes ``E[f'(s)^2 V(f(s))]``. The branch and
a projection receive the average ``Var(g) = E_x E_F[post'^2 V_{b+1}]`` (their weights mix
units). Measured on torchvision ``BasicBlock`` stacks and ReLU residual MLPs: gradient std
within 7% of the prediction (13% at a 27-fan-in stem), where a Gaussian sum with independent
masks was up to 1.4x off.

A branch times a constant, ``y = post(x + c F(x))`` (``alpha * F(x)``, ReZero's and
LayerScale's ``self.gamma * F(x)`` with equal entries, as initialized, also
``gamma[:, None, None]``; ``F(x) / tau``; ``x.add(F(x), alpha=c)``): the branch's values are
``c`` times its output's (forward ``E[(cF)^2] = c^2 E[F^2]``, its nodes times ``c``), and
``Var(dL/dF) = c^2 Var(dL/d sum)``. A training-mode dropout ending the branch, ``x +
drop(F(x))`` (a transformer's feed-forward block): the branch's value is ``F / (1 - p)`` with
probability ``1 - p`` and 0 otherwise (a node of mass ``p`` at 0 in the distribution the
post activation sees), and ``Var(dL/dF) = E[post'^2 V | kept] / (1 - p)``. Measured (4-6
blocks of 256, 512 rows, 2 seeds): grad_pre_std 0.96-1.03x for c from 0.1 to 1.5 (tanh,
GELU, ReLU, a ReLU after the sum), 0.91-1.06x for ReLU branches at c = 2 (6 blocks),
dropout 0.2-0.5 0.98-1.03x; ``c = 0`` (ReZero as initialized) predicts no gradient in the
branches, as measured. A scale of unequal entries
(a trained LayerScale, a stochastic-depth mask in training mode) is refused by name.
A scaled sum, ``post(k (x + F(x)))`` (``(x + F(x)) / sqrt(2)``, ``torch.tanh((x + F(x)) *
k)``, also with an activation module after the block): the sum's values times ``k``, its
gradient times ``k`` back (the pooled-gradient refinement under a global average pool is
left out at such a block; measured 0.98-1.04x); ``k * post(x + F(x))`` is refused.
``h.clone()`` anywhere in the chain is the identity (its values, its gradient).

The gradient scale is anchored at the last layer: with ``y`` and ``loss_fn`` the model is
measured with :func:`depthlab.torch.probe` on ``(x, y)`` and ``predicted grad_pre_std[L]`` =
measured ``grad_pre_std[L]``, the layers below from ``E[g_L^2] = std^2 + mean^2`` (``W^T g``
carries the mean of ``g = dL/ds_L`` down as well: MSE towards targets of mean 5 had every
lower layer predicted 0.045x with the std alone); where the probe has no gradient there (a
model whose parameters are all frozen: nothing requires grad) the anchor is ``E[g_L^2]`` of
the gradient :func:`~depthlab.torch.chain.chain` computes on its own copy of ``x`` (the
prediction was the relative one, 850x the true gradient at the last layer); without ``y``
and ``loss_fn`` the ``value`` column is NaN (nothing measured) and ``grad_pre_std`` is
predicted relative to the last layer (= 1 there).

Result: the tidy table ``step, layer, module, quantity, value, predicted`` for the quantities
``pre_std``, ``act_std`` (layers with an activation) and ``grad_pre_std``.
Pooling and dropout between segments (:mod:`depthlab.torch.pooling`), as modules or as the
functions a forward calls itself (``F.max_pool1d/2d/3d`` with or without ``return_indices``,
``torch.max_pool2d``, ``F.avg_pool*``, ``F.adaptive_avg_pool*``, ``F.adaptive_max_pool*``:
found by a ``TorchFunctionMode`` during the forward, each modelled as the module of the same
arguments, :func:`depthlab.torch.pooling.function_module`, so ``F.max_pool2d(F.relu(conv1(x)),
2)`` gets exactly the prediction of ``nn.ReLU()`` then ``nn.MaxPool2d(2)``; the activation is
the layer's when it comes before the pool; ``F.dropout(h, p, training)`` is ``nn.Dropout(p)``;
``h.mean((2, 3))`` / ``h.amax((2, 3))`` over the trailing 1-3 dimensions, global pooling as in
torchvision's ShuffleNetV2, is ``AdaptiveAvgPool2d(1)`` / ``AdaptiveMaxPool2d(1)``; amax shares
a tie's gradient, max pooling gives it to one entry: the same where values are distinct).
A non-decreasing activation *after* a max pool of a layer's (or BatchNorm's) output,
``F.relu(F.max_pool2d(conv1(x), 2))`` or ``nn.MaxPool2d`` then ``nn.ReLU``, is the pool of
the activation (``f(max_i s_i) = max_i f(s_i)``, and the gradient reaches the same entry with
the same ``f'``): predicted as such, without ``act_std`` rows (no tensor holds ``f(s)``).
Average pooling
(``AvgPool*``, ``AdaptiveAvgPool*``; global average pooling before a CNN's head: each of the
``P`` inputs receives ``1/P`` of the gradient, ``Var(dL/dx) = Var(g) / P^2`` per input, exact),
max pooling (``MaxPool*``, ``AdaptiveMaxPool*``: the maximum of a window's entries forward,
the whole gradient to the largest entry backward, so the layer before sees it where its
activation's derivative is that of a large value) and dropout in training mode
(``E[a^2] / (1 - p)``). A window's entries are taken as independent draws: exact where they
are (measured within 6%, tests/test_torch_pooling.py); neighbouring positions of a CNN are
correlated, so near a pool the prediction is less exact (ResNet-18 at 64x64 pre_std
0.93-1.11x, grad_pre_std 0.78-1.0x, at 32x32, where layer4 runs on 1x1 positions,
grad_pre_std 0.66-1.0x). A window reads one channel, whose own mean over the batch (its bias,
a BatchNorm's beta, the weights on the inputs' means) a pool keeps: averaged as a constant,
maxima per channel (:mod:`depthlab.torch.pooling`); taken for noise of the mixture over
channels, a default-init ReLU CNN (3x3 convs 3 -> 32 -> 64 on 16x16, two 2x2 pools, Linear
128; 3 seeds) had the Linear's pre_std predicted 0.78x (average pools) and 1.15x (max pools)
the measurement and the convs' grad_pre_std 1.13x (max), now 0.95x, 0.97x and 1.01x. The
rest: an average of ``k`` entries with mean pairwise correlation ``rho`` has variance
``Var(a) (1 + (k - 1) rho) / k``, not ``Var(a) / k`` (backward the same factor), and the
maximum of correlated entries is smaller than that of independent ones. Neighbouring
outputs of a 3x3 conv share 6 of their 9 taps, so ``rho`` is set by
the kernels and by the input's own spatial correlation; a principled estimate would carry
the covariance between positions ``delta`` apart through the chain (random-weight CNN mean
field, Xiao et al. 2018: each conv averages it over the kernel's offsets, each activation
maps it by its dual kernel), which predict() does not do. The gradient has the same gap: a
global average pool gives a channel's positions alike gradients (``g_c f'(s_p) / P``), which
a conv's transposed taps pass down with random signs (no excess, in expectation) but a pool
with overlapping windows adds up (an entry in ``w`` windows: ``~w^2`` times an alike
gradient's variance, ``w`` times an independent one's) and a depthwise conv + activation keeps
(one channel's taps, whose sign the mask follows): ReLU CNNs with a global pool head (32
channels, 3 seeds) measured the conv under an ``AvgPool2d(3, 2, 1)`` 1.44x the prediction,
under a ``MaxPool2d(3, 2, 1)`` 1.25x, a depthwise-separable stack's stem 1.22x (10 seeds);
with a flatten head 0.96-1.02x. ``attrs["approximation"]`` names such a pool or depthwise
conv below a global average pool (:func:`_alike_under_global_pool`).

LayerNorm, GroupNorm and RMSNorm (:mod:`depthlab.torch.norms`, where the forward and backward
maps are derived): after a layer (``Linear -> LayerNorm -> act``, ``Conv -> GroupNorm ->
ReLU``) as BatchNorm is, but each example divided by its own variance over the ``n`` values it
normalizes (``sigma^2 = q - (q - qb) / k`` for ``k`` units per group; RMSNorm the mean square),
``Var(dL/ds) = mean(gamma^2 E f'^2) E[(n - 1 - c + r'^2) / (n (sigma^2 + eps))] Var(dL/da)``
(``c = 1`` with mean subtraction, 0 for RMSNorm; ``sigma^2 ~ chi2_{n-c}``); and between
segments, reading an activation's or a residual block's output: a pre-norm branch
``x + F(LN(x))`` (also right after a layer, a transformer's embedding), the final norm before
a head, a post-norm block ``LN(x + F(x))`` (the norm after the sum, inside the block or after
it), where the input's distribution of a unit's value is standardized and mapped by each unit's
``(gamma_j, beta_j)`` and the gradient multiplied by ``mean(gamma^2)`` times the same factor.
Measured (3 seeds, the measured / predicted grad_pre_std over all layers below the anchor):
pre-norm MLP residual stacks (GELU, LayerNorm or RMSNorm, final norm, depth 4-12, width
64-128) 0.98-1.03x, a token stack (N, 8, 64) 1.02-1.04x, post-norm ``LN(x + F(x))`` 0.98-1.02x
at depth 4, 0.97-1.08x at depth 12 (the skip carries the previous norm's output, whose
variance is the same in every example: the next norm's ``sigma^2`` fluctuates less than a
fresh layer's, :class:`depthlab.torch.norms.Fixed`; taken as ``chi2_{n-1}``, 0.91-0.99x),
``x + LN(F(x))`` 0.94-1.10x; Conv -> GroupNorm -> ReLU with a Flatten head 0.93-1.07x.
An average pool after a norm's activation makes the gradient alike over a window's positions
(a global average pool: one value per channel, ``g_c f'(y_p)``), so GroupNorm's mean over a
group removes ``~ E[gamma f']^2 / (k E[gamma^2 f'^2])`` of it and the direction of ``xhat``
(which the ReLU mask correlates with) ``~ E[xhat gamma f']^2 / (k E[gamma^2 f'^2])``, ``k``
channels per group, for the isotropic ``1 / n`` each
(:func:`depthlab.torch.propagation.pool_factor`); under a global pool the share of the
gradient still alike over a channel's positions (``k > 1``: the group keeps each channel's
deviation from the group mean) reaches the GroupNorm layers below through their convs. Measured
(Conv -> GroupNorm -> ReLU/Tanh x4, 64 channels, 8x8, batch 64, 3 seeds, every conv):
one channel per group 0.96-1.06x (was 0.41-0.48x), 2: ReLU 0.87-1.03x, tanh 0.96-1.11x (was
0.62-0.81x), 4 and 8: 0.89-1.08x (was 0.77-0.96x); SiLU and GELU at one channel per group
1.00-1.20x and 0.99-1.12x (they were ~1.4e5x and 1.22-1.37x: the parts of ``f'`` linear in
``xhat``, and of ``xhat f'`` in ``xhat, xhat^2``, whose window means the group's fixed sums
hold, were taken as independent draws, :func:`depthlab.torch.propagation._explained`).
Inside residual blocks
``post(x + GN(conv(...)))`` under a global pool the sum's gradient holds ``g_c post'(s)
h(post(s))``, ``h`` the relative size of the pooled gradient at the block output's value
(1 under the pool): the norm ending the branch sees ``deriv(s) = post'(s) h(post(s))`` at
``s = x + y`` (``x`` the skip's value, independent at init:
:func:`depthlab.torch.propagation.sum_pool_moments`), for the share ``Var(g_c) E[deriv^2] /
Var(dL/ds)``; the identity skip passes ``h_x(x) = E_F[post'(x + F) h(post(x + F))]`` to
the block below (a unit active in one block is likely active in the next, so the masks'
product is not ``E[post']^2`` per block), the branch's own alike share added, a projection
shortcut mixing channels (``h = 1`` again); a stem under the blocks takes the share ``Var(g_c)
E[h]^2 / Var(dL/da)``. Without ``post`` a GroupNorm(C, C) ending the branch receives a
gradient that is all channel mean and passes none (measured ~1e-16 of the stem's). Measured
(stem + 2-4 blocks, 32-64 channels, 8x8 and 16x16, batch 32, 3 seeds, every conv): ReLU at
1, 2 and 4 channels per group 0.93-1.08x (was 0.40-0.90x), tanh 1.00-1.05x (was 0.54-0.91x),
GELU 0.91-1.05x (was 0.38-0.82x), with a GroupNorm'd stride-2 projection shortcut 0.93-1.13x
(was 0.56-0.89x). Less exact where a channel has few positions (4x4: 1.12-1.16x; the
norm's ``xhat`` sums to 0 over them exactly, which the independent-position moments do not
hold to) and for a block after a pool between blocks, whose input is then the pool's output
(GroupNorm(C, C), 8x8 -> 4x4: an ``AvgPool2d(2)`` 1.26-1.29x, a ``MaxPool2d(2)`` 1.81-1.84x
at that block, was 0.31-0.40x; the blocks below 0.83-0.93x, was 0.39-0.62x: a max pool's
output keeps most units active, and the small share of the gradient the norm passes is
predicted too small). Groups of 4 values or fewer
are less exact (``E[1 / sigma^2]`` is heavy-tailed there, a measurement below its mean:
GroupNorm(64, 256) after Linear layers 0.74x). InstanceNorm1d/2d/3d with each example's
statistics (training mode, or eval with ``track_running_stats=False``, its default) normalizes
each example's channel over its positions: it is GroupNorm(C, C), the same table as that twin
(CycleGAN-style ``Conv -> InstanceNorm2d -> ReLU`` x3 and residual blocks 0.95-1.05x, 3
seeds); on running statistics, or given ``(N, C)`` (which torch reads as one unbatched example
whose channels are the rows), it is refused by name.

Anything else between layers (other pooling: ``LPPool*``, ``F.lp_pool2d``, fractional max
pooling; an activation after average pooling or a non-monotone one after max pooling,
``F.gelu(F.max_pool2d(conv(x), 2))``; ``F.alpha_dropout``; an
arithmetic operation such as ``h * 2``; a normalization other than those (LocalResponseNorm)
or BatchNorm in eval mode, alpha dropout in training mode, nested blocks, a block with more
than two paths, a layer called twice, a ``Linear``/``Conv`` subclass with its own ``forward``
such as a weight-standardized conv) breaks the chain: a ValueError names the layer and, where
it can, the module in between (e.g. ``'2' (LPPool2d)``), the function (``the function
F.lp_pool2d``) or the torch operation under any views (``'Mul' (autograd node MulBackward0)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..validators import keyword_hints
from . import norms, pooling
from .chain import chain
from .layers import (
    check_initialized,
    check_materialized,
    check_model,
    check_nonempty_weights,
    discover,
    inputs_kept,
    untouched,
    weight_modules,
)
from .probe import check_batch, probe, resolve_loss, unbatched_named
from .propagation import (
    _along,
    _apply,
    _backward,
    _between_backward,
    _between_forward,
    _dot,
    _finite_units,
    _forward,
    _gauss_dist,
    _path_backward,
    _path_forward,
    pool_factor,
    sum_pool_moments,
)
from .train import out_of_memory

__all__ = ["chain", "predict", "theory_rows"]


@keyword_hints
def predict(model: nn.Module, x: Any, y: Any = None,
            loss_fn: Callable[[Any, Any], torch.Tensor] | str | None = None,
            percentiles: Sequence[float] = ()) -> pd.DataFrame:
    """Predicted ``pre_std``, ``act_std`` and ``grad_pre_std`` per layer (see the module
    docstring) beside the values measured by :func:`depthlab.torch.probe` on ``(x, y)``
    (``value``; NaN without ``loss_fn``; ``loss_fn`` may be a loss name such as
    ``"cross_entropy"``, see :data:`depthlab.torch.probe.LOSSES`, and one of the output alone,
    an autoencoder's ``lambda out, _: F.mse_loss(out, x)``, takes ``y=None``, as in
    :func:`~depthlab.torch.probe.probe`). ``x``: the model's input
    tensor, real-valued, or integer pixels the forward converts before its first layer
    (``x.float() / 255``; token ids into an Embedding are not covered). Called inside
    ``torch.no_grad()`` or ``torch.inference_mode()`` it still traces the autograd graph it
    needs (inference tensors are copied)."""
    with torch.inference_mode(False), torch.enable_grad(), inputs_kept(x, y), \
            out_of_memory("dlt.predict", x):
        x, y = (t.clone() if isinstance(t, torch.Tensor) and t.is_inference() else t
                for t in (x, y))
        check_model(model)  # before untouched(): a TorchScript module was an AttributeError
        loss_fn = resolve_loss(loss_fn)
        # the model and a loss module with its own state as found, also where the loss runs
        # outside the probe's isolation (chain's), and the global random generators
        with untouched(model, loss_fn) if isinstance(model, nn.Module) else nullcontext():
            return _predict(model, x, y, loss_fn, percentiles)


_WEIGHT_HOOKS = frozenset({"WeightNorm", "SpectralNorm"})
"""The forward pre-hooks of the deprecated ``torch.nn.utils.weight_norm`` and
``torch.nn.utils.spectral_norm``, which compute a module's ``weight`` attribute from its
parameters at each forward."""


def _refresh_hook_weights(model: nn.Module) -> None:
    """Compute the ``weight`` of each module under the deprecated ``weight_norm`` /
    ``spectral_norm`` as its next forward will (their pre-hook, run here; the caller's
    :func:`~depthlab.torch.layers.untouched` puts the attribute and the buffers back): the
    attribute holds the weight of the last forward, so after ``load_state_dict`` (or a change of
    ``weight_g``) the theory used the old weights (``pre_std`` predicted 0.276 where the
    measurement is 0.817, magnitudes loaded 3x the initial ones)."""
    for m in model.modules():
        for hook in list(m._forward_pre_hooks.values()):
            if type(hook).__name__ in _WEIGHT_HOOKS and hasattr(hook, "name"):
                hook(m, ())


def _predict(model: nn.Module, x: Any, y: Any, loss_fn: Callable[[Any, Any], torch.Tensor] | None,
             percentiles: Sequence[float]) -> pd.DataFrame:
    check_model(model)  # before model.parameters(): a non-module was an AttributeError
    check_materialized(model)
    check_initialized(model)
    if y is not None and loss_fn is None:  # (a loss_fn of the output alone, an autoencoder's
        # lambda out, _: F.mse_loss(out, x), takes y=None, as in probe(): it was refused)
        raise ValueError("y given without loss_fn; give both y and loss_fn (to measure and "
                         "anchor the gradient scale), or neither (a loss_fn of the output alone "
                         "takes y=None)")
    if loss_fn is not None and not callable(loss_fn):  # (it failed inside the forward's
        # bookkeeping: "'int' object is not callable"; dlt.probe said what was expected)
        raise TypeError(f"loss_fn must be callable (output, y) -> scalar tensor, or a loss "
                        f"name, got {type(loss_fn).__name__}")
    if not isinstance(x, torch.Tensor):
        raise TypeError(_not_a_tensor(x))
    # integer x (uint8 pixels): predicted when the forward converts it before the first
    # layer without weights (a DQN's x.float() / 255), from the values that layer reads
    integer = not x.is_floating_point() and not x.is_complex()
    not_real = (f"x must be a floating-point tensor, got dtype {x.dtype} (predict() "
                "propagates variances from real-valued inputs, or from the real values a "
                "forward makes of integer ones before its first layer, x.float() / 255; token "
                "ids into an Embedding are not supported)")
    if not x.is_floating_point() and not integer:
        raise TypeError(not_real)
    check_batch(x)
    if x.dim() < 2 and integer and any(isinstance(m, (nn.Embedding, nn.EmbeddingBag))
                                       for m in model.modules()):
        # token ids (N,) into an Embedding were 'x must be a batch of examples (N,
        # features...), got shape (64,)', as if the ids were not a batch
        raise TypeError(not_real)
    if x.dim() < 2:
        raise ValueError(f"x must be a batch of examples (N, features...), got shape "
                         f"{tuple(x.shape)}: its entries were taken for the examples "
                         "(x[None] is one example)")
    bad = 0 if integer else int((~torch.isfinite(x.detach())).sum())
    if bad:
        raise ValueError(f"x has {bad} non-finite entries (NaN or inf) of {x.numel()}; expected "
                         "finite inputs (predict() propagates their mean and variance)")
    for name, prm in model.named_parameters():  # a diverged model: an inf weight gave act_std
        # and grad_pre_std 0.0 and the next layer's pre_std 0.50 beside NaN measurements
        if prm.is_floating_point():
            bad = int((~torch.isfinite(prm.detach())).sum())
            if bad:
                raise ValueError(f"parameter {name!r} holds {bad} non-finite value"
                                 f"{'s' if bad > 1 else ''} (NaN or inf) of {prm.numel()} (a "
                                 "diverged or corrupted model); expected finite weights "
                                 "(predict() propagates their mean and variance)")
    wdtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), x.dtype)
    # x of another dtype than the weights: predicted when the forward converts it before the
    # first layer (float64 rows from NumPy, x.float() in the forward), else refused
    mismatch = x.dtype != wdtype and not integer
    other_dtype = (f"x has dtype {x.dtype} but the model's weights are {wdtype}; expected x "
                   f"of the model's dtype (x.to({wdtype})), or a forward that converts it "
                   "before its first layer")
    try:
        with unbatched_named(model, x):  # a conv's (C, H, W) that fails later: said so
            if not (integer and any(isinstance(m, (nn.Embedding, nn.EmbeddingBag))
                                    for m in model.modules())):  # (token ids: chain's)
                _check_no_maps(model, x)
            segments = chain(model, x, y, loss_fn)
        check_nonempty_weights((seg.get("name", ""), seg["module"]) for seg in segments
                               if isinstance(seg.get("module"), nn.Module))
    except (TypeError, ValueError) as e:  # (a layer that read the integers themselves)
        if integer and (str(e).startswith("x has dtype") or any(
                isinstance(m, (nn.Embedding, nn.EmbeddingBag)) for m in model.modules())):
            raise TypeError(not_real) from None
        if mismatch and str(e).startswith("x has dtype"):
            raise TypeError(other_dtype) from None
        raise
    if (integer or mismatch) and "input" not in segments[0]:
        raise TypeError(not_real if integer else other_dtype)
    with torch.no_grad(), untouched(model):  # reading a parametrized weight (spectral_norm
        _refresh_hook_weights(model)         # in training mode) updates its buffers
        # the first layer's input when the forward computed it from x alone (x / 255)
        x64 = _batched(segments[0].get("input", x).detach().to(torch.float64), segments[0])
        dev = _deviation(x64, segments[0])
        bvar = float(dev.pow(2).mean())
        sq0, mean0 = float(x64.pow(2).mean()), float(x64.mean())
        state = (sq0, mean0, bvar, _gauss_dist(None, sq0 - mean0 ** 2, mean0))
        rows, grad = _run(segments, state)
        fin = _finite_units(rows)
        groups = _input_groups(x64, dev)
        if len(groups) > 1:  # after the whole batch's run: BatchNorm's variances are known
            rows, grad = _combine([(w, *_run(segments, st)) for w, st in groups])
    measured = None
    scale = 1.0
    top_mean_sq = 0.0
    if loss_fn is not None:
        measured = probe(model, x, y, loss_fn, percentiles=percentiles)
        top = measured[(measured.layer == rows[-1]["layer"])
                       & (measured.quantity == "grad_pre_std")]["value"]
        held = segments[-1].get("top_grad")  # (mean, mean square) of dL/ds there, from chain()
        if len(top) and math.isfinite(float(top.iloc[0])) and grad[-1] > 0:
            # Var(dL/da) below the last layer is m v E[g^2], its mean included
            g_mean = (held or (0.0, 0.0))[0]
            top_mean_sq = g_mean * g_mean
            scale = (float(top.iloc[0]) ** 2 + top_mean_sq) / grad[-1]
        elif held is not None and grad[-1] > 0:
            # no measured gradient there (a frozen model: nothing requires grad, so the probe
            # has no grad_pre_* rows): chain()'s own dL/ds of the last layer, computed on its
            # copy of x that requires grad (the predictions were the relative ones, 1 at the
            # last layer, whatever the loss's scale: 850x the true gradient there)
            top_mean_sq = held[0] * held[0]
            scale = held[1] / grad[-1]
        else:  # nothing to anchor the gradient's scale to: no number rather than a wrong one
            scale = math.nan
    out = []
    for j, (r, g) in enumerate(zip(rows, grad)):
        g_sq = g * scale
        if j == len(rows) - 1:  # the anchor: its std is the measured one, the mean left out
            g_sq = max(g_sq - top_mean_sq, 0.0)
        q_fin, a_fin = fin[j]
        preds = [("pre_std", math.sqrt(max(r["q"] - q_fin, 0.0))),
                 ("grad_pre_std", math.sqrt(g_sq))]
        if r["act"]:
            preds.insert(1, ("act_std", math.sqrt(max(r["act_var"] - a_fin, 0.0))))
        for q, p in preds:
            out.append((0, r["layer"], r["module"], q, p))
    df = pd.DataFrame(out, columns=["step", "layer", "module", "quantity", "predicted"])
    if measured is not None:
        df = df.merge(measured[["layer", "quantity", "value"]], on=["layer", "quantity"],
                      how="left")
    else:
        df["value"] = math.nan
    df = df[["step", "layer", "module", "quantity", "value", "predicted"]]
    df = df.astype({"step": "int64", "layer": "int64", "value": "float64",
                    "predicted": "float64"})
    pools = sorted({b.label for seg in segments for b in _all_betweens(seg)
                    if b.kind in ("avg", "max")})
    notes = [f"pooling windows taken as independent draws ({', '.join(pools)}): neighbouring "
             "positions are correlated, so the layers near a pool are predicted less exactly"
             ] if pools else []
    if pools and _spatial_norms(segments):
        few = _fewest_channels_per_group(segments)
        here = f"; this model's GroupNorm has {few} channel{'s' if few > 1 else ''} per " \
            "group" if few is not None else ""
        notes.append("a GroupNorm or LayerNorm over positions takes the mean of a gradient "
                     "that a pool makes alike over positions, modelled to first order over "
                     "independent channels and positions (GroupNorm CNNs with a global "
                     "average pool: grad_pre_std 0.96-1.06x the prediction at 1 channel per "
                     "group, GroupNorm(C, C) (SiLU, GELU up to 1.2x), 0.87-1.11x at 2, "
                     "0.89-1.08x at 4 or more; inside "
                     "residual blocks 0.91-1.13x, up to 1.3x at 4x4 positions and 1.8x "
                     "after a max pool between blocks"
                     f"{here})")
    alike = _alike_under_global_pool(segments)
    if alike:
        notes.append("a global average pool gives a channel's positions alike gradients; "
                     f"below it {' and '.join(alike)} add{'s' if len(alike) == 1 else ''} up "
                     "those of neighbouring positions (a conv's random taps do not), which "
                     "the theory, taking positions as independent, does not model: the layers "
                     "below measured up to 1.44x the prediction under an AvgPool2d(3, 2, 1), "
                     "1.25x under a MaxPool2d(3, 2, 1), 1.24x under a depthwise 3x3 conv + "
                     "ReLU")
    got = _width_spread(segments, rows, x64)
    spread, homogeneous = got if got is not None else (None, True)
    if spread is not None and spread > _SPREAD_NOTED and homogeneous:
        depth = len(segments)
        notes.append(f"a chain of {depth} Linear layers with a positively homogeneous "
                     "activation (ReLU, LeakyReLU or none) is predicted as the mean over "
                     "random draws of its weights; at finite width one network's variances "
                     "walk away from that mean (the batch's squared length gains a relative "
                     "spread of about Var f^2 / (n (E f^2)^2) per layer of n units once the "
                     "examples are alike, compounded through the layers above: sd of log "
                     f"pre_std {spread:.2f} at the last hidden layer), so this network's "
                     "pre_std and grad_pre_std may differ "
                     f"from the prediction by a factor of about {math.exp(spread):.2f} either "
                     "way (ReLU, 52 layers of 128: 0.25-1.47x over 6 seeds); the mean over "
                     "several seeds, or wider layers, agree")
    elif spread is not None and spread > _SPREAD_NOTED:
        notes.append(f"a chain of {len(segments)} Linear layers whose activation's length map "
                     "E f(s)^2 is not linear in Var(s) is predicted by propagating the batch's "
                     "mean variance, outside the theory's assumptions at this width: one "
                     "network's squared lengths fluctuate by about Var f^2 / (n (E f^2)^2) per "
                     "layer of n units once the examples are alike, and a convex map (slope "
                     "d log E f^2 / d log q above 1, e.g. Hardswish or GELU after weights of "
                     "gain above 1) amplifies those fluctuations layer by layer and "
                     "biases the mean upward: sd of log "
                     f"pre_std {spread:.2f} at the last hidden layer, so this network's "
                     "pre_std and grad_pre_std may differ from the prediction by a factor of "
                     f"about {math.exp(spread):.2f} or more (Hardswish, gain 1.5, 12 layers "
                     "of 128: pre_std of the last hidden layer 0.9-1.9x the prediction over 4 "
                     "seeds); wider layers agree")
    df.attrs["approximation"] = "; ".join(notes)
    return df


# the spread of one network (sd of log pre_std) above which the note says so: 10%
_SPREAD_NOTED = math.log(1.1)


def _homogeneous_slope(spec: Any) -> float | None:
    """``a`` when the activation is positively homogeneous, ``f(s) = s`` for ``s > 0`` and
    ``a s`` for ``s < 0`` (ReLU: 0, LeakyReLU: its slope; checked on ``f`` itself at a few
    points), else None. ``spec`` None (no activation) is the identity, ``a = 1``."""
    if spec is None:
        return 1.0
    if not getattr(spec, "scalar", True) or getattr(spec, "mean_function", None) is not None:
        return None
    s = torch.tensor([-3.0, -1.0, -0.5, 0.5, 1.0, 3.0], dtype=torch.float64)
    try:
        f = spec.function(s.clone()).double()
    except Exception:  # noqa: BLE001 - an activation that cannot take float64: not covered
        return None
    a = -float(f[1])
    if not torch.allclose(f[3:], s[3:], rtol=1e-9, atol=1e-12) \
            or not torch.allclose(f[:3], a * s[:3], rtol=1e-9, atol=1e-12):
        return None
    return a


def _pair_moments(a: float, c: float) -> tuple[float, float]:
    """For ``f(s) = max(s, 0) + a min(s, 0)`` and standard Gaussians ``z1, z2`` of correlation
    ``c``: the correlation map ``E[f(z1) f(z2)] / E[f^2]`` and ``kappa(c) = E[f(z1)^2 f(z2)^2]
    / (E f^2)^2 - 1`` (the covariance of two examples' squared lengths per unit; ``c = 1``:
    ``Var f^2 / (E f^2)^2``, ReLU 5; ``c = 0``: 0), by a 48x48-node Gauss-Hermite rule."""
    z, w = np.polynomial.hermite_e.hermegauss(48)
    w = w / w.sum()
    z1, z2 = z[:, None], c * z[:, None] + math.sqrt(max(1.0 - c * c, 0.0)) * z[None, :]
    ww = w[:, None] * w[None, :]
    f1, f2 = np.where(z1 > 0, z1, a * z1), np.where(z2 > 0, z2, a * z2)
    ef2 = (1.0 + a * a) / 2.0
    return (float((ww * f1 * f2).sum()) / ef2,
            float((ww * f1 ** 2 * f2 ** 2).sum()) / ef2 ** 2 - 1.0)


def _mean_cosine(x: torch.Tensor) -> float:
    """The mean cosine between two different examples of ``x`` (rows flattened; at most 256
    rows), the correlation the first layer's pre-activations of two examples start from."""
    rows = x.reshape(x.shape[0], -1)[:256].double()
    if rows.shape[0] < 2:
        return 1.0
    unit = rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-300)
    gram = unit @ unit.T
    m = rows.shape[0]
    return float((gram.sum() - gram.diagonal().sum()) / (m * (m - 1)))


def _general_moments(f: Callable[[torch.Tensor], torch.Tensor], q: float, shift: float,
                     c: float) -> tuple[float, float, float] | None:
    """For an elementwise ``f`` and pre-activations ``s = shift + sqrt(q) z`` of two examples
    whose centred parts ``z1, z2`` (standard Gaussians) have correlation ``c``: the next
    layer's correlation ``E[f(s1) f(s2)] / E[f^2]`` (a nonzero ``E f`` makes the examples
    alike), ``kappa(c) = E[f(s1)^2 f(s2)^2] / (E f^2)^2 - 1`` and the elasticity of the length
    map ``g = d log E f(s)^2 / d log q`` (a secant over ``q e^(+-0.1)``; 1 for a positively
    homogeneous ``f`` without shift, above 1 where the map is convex: one network's
    fluctuations of length grow layer by layer), by a 48x48-node Gauss-Hermite rule; None where
    ``f`` gives no finite positive ``E f^2``."""
    z, w = np.polynomial.hermite_e.hermegauss(48)
    w = w / w.sum()
    sd = math.sqrt(max(q, 0.0))
    s1 = shift + sd * z[:, None]
    s2 = shift + sd * (c * z[:, None] + math.sqrt(max(1.0 - c * c, 0.0)) * z[None, :])
    try:
        with torch.no_grad():
            f1 = f(torch.from_numpy(np.ascontiguousarray(s1)).clone()).double().numpy()
            f2 = f(torch.from_numpy(np.ascontiguousarray(s2)).clone()).double().numpy()
            ends = [f(torch.from_numpy(shift + sd * math.exp(e / 2) * z).clone()).double()
                    .numpy() for e in (-0.1, 0.1)]
    except Exception:  # noqa: BLE001 - an activation that cannot take float64: not covered
        return None
    ww = w[:, None] * w[None, :]
    ef2 = float((w[:, None] * f1 ** 2).sum())
    lo, hi = (float((w * e ** 2).sum()) for e in ends)
    if not all(math.isfinite(v) and v > 0 for v in (ef2, lo, hi)):
        return None
    return (float((ww * f1 * f2).sum()) / ef2,
            float((ww * f1 ** 2 * f2 ** 2).sum()) / ef2 ** 2 - 1.0,
            (math.log(hi) - math.log(lo)) / 0.2)


def _width_spread(segments: list[dict], rows: list[dict], x: torch.Tensor
                  ) -> tuple[float, bool] | None:
    """``(sd, homogeneous)``: the sd of ``log pre_std`` of one network's last hidden layer
    about the prediction (the mean over weight draws), for a plain chain of ``nn.Linear``
    layers (no norm, no pooling or dropout between, no residual block) with elementwise
    activations of one function per unit, and whether all of them are positively homogeneous
    (:func:`_homogeneous_slope`); None for any other model (norms reset an example's length).
    The batch's mean squared length after layer ``j`` of ``n_j`` units has relative variance
    ``kappa(c_j) / n_j`` (:func:`_pair_moments`, :func:`_general_moments`: the covariance of
    two examples' squared lengths, which grows with their correlation ``c_j``, carried up from
    the inputs' mean cosine by the activation's correlation map; examples that are still
    unlike average the spread out); the next layer passes the fraction ``rho_k = 1 -
    mean(b_k^2) / E[s_k^2]`` of it on (its biases add a constant part), and its activation
    the factor ``g_k``, the elasticity of its length map ``d log E f(s_k)^2 / d log q_k`` (1
    for a homogeneous one; Hardswish after weights of gain 1.5: above 1, the fluctuations
    grow): ``Var log q_L = sum_j kappa(c_j) / n_j rho_L^2 prod_{j<k<L} (rho_k g_k)^2``, and
    ``sd log pre_std = sqrt(Var log q_L) / 2``."""
    if len(segments) < 3 or len(rows) != len(segments):
        return None
    slopes, units, rhos, specs = [], [], [], []
    for seg, row in zip(segments, rows):
        module = seg.get("module")
        if seg.get("kind") != "layer" or type(module) is not nn.Linear \
                or seg.get("norm") is not None or seg.get("between"):
            return None
        spec = seg.get("activation")
        if spec is not None and (not getattr(spec, "scalar", True)
                                 or getattr(spec, "mean_function", None) is not None):
            return None
        slopes.append(_homogeneous_slope(spec))
        specs.append(spec)
        units.append(module.out_features)
        total = row["q"] + row["shift"] ** 2
        bias = 0.0 if module.bias is None else float(module.bias.detach().double().pow(2).mean())
        rhos.append(min(max(1.0 - bias / total, 0.0), 1.0) if total > 0 else 0.0)
    last = len(segments) - 2  # the last hidden layer
    homogeneous = all(a is not None for a in slopes[:last])
    c = _mean_cosine(x)
    gains = [1.0] * len(segments)
    kappas = []
    for j in range(last):  # layer j's units feed layer j + 1's pre-activation length
        if slopes[j] is not None:
            c, kappa = _pair_moments(slopes[j], c)
        else:
            got = _general_moments(specs[j].function, float(rows[j]["q"]),
                                   float(rows[j]["shift"]), c)
            if got is None:
                return None
            c, kappa, gains[j] = got
            c = min(max(c, -1.0), 1.0)
        kappas.append(kappa)
    var = 0.0
    for j in range(last):
        carried = math.prod(r * r for r in rhos[j + 1:last + 1]) \
            * math.prod(g * g for g in gains[j + 1:last])
        var += kappas[j] / units[j] * carried
    return math.sqrt(max(var, 0.0)) / 2.0, homogeneous  # (inputs of negative mean cosine)


def _check_no_maps(model: nn.Module, x: torch.Tensor) -> None:
    """A ValueError naming the layers of :func:`~depthlab.torch.probe.probe`'s table that are
    weights the forward uses as linear maps itself (``F.linear(x, self.weight)`` beside child
    layers, ``x @ self.w1``, ``h @ w`` for ``w`` in an ``nn.ParameterList``, a tied projection
    ``h @ self.emb.weight.T``, a hand-written ``torch.relu(x @ self.W + self.b)`` layer):
    the theory follows the outputs of ``Linear``/``Conv*`` modules, and such a model was
    refused by a graph node (``'Mm'``) or by a layer name that is not in the probe's table
    (``''``, ``'ws'``). Only a model with such weights runs the extra forward
    (:func:`~depthlab.torch.layers.discover`)."""
    from .probe import _loose_weights

    if not _loose_weights(model, weight_modules(model))[0]:
        return
    maps = [info for info in discover(model, x) if info.kind == "map"]
    if not maps:
        return
    names = ", ".join(f"{info.name!r} ({type(info.owner).__name__})" for info in maps[:4])
    more = f" and {len(maps) - 4} more" if len(maps) > 4 else ""
    few = len(maps) == 1 and not more
    raise ValueError(f"predict() cannot predict the layer{'' if few else 's'} {names}{more} of "
                     f"dlt.probe's table: weight{'' if few else 's'} the forward uses as "
                     f"{'a linear map' if few else 'linear maps'} itself (x @ w, "
                     "F.linear(x, w)), not through an nn.Linear/"
                     "nn.Conv* module whose output the theory follows; expected each such "
                     "weight in an nn.Linear or nn.Conv* module that forward calls (dlt.probe "
                     "measures the model as it is)")


def _alike_under_global_pool(segments: list[dict]) -> list[str]:
    """What below a global average pool passes its alike gradient on to the positions
    without the random signs of a conv's taps: pools whose windows overlap (an entry in
    ``w`` windows receives ``sum of w`` alike gradients, variance ``w^2`` for ``w`` of
    independent ones) and depthwise convs followed by an activation (one channel's taps,
    whose sign the activation's mask follows). Named in ``attrs["approximation"]`` (not
    modelled: ReLU CNNs with a global pool measured an ``AvgPool2d(3, 2, 1)`` 1.44x, a
    ``MaxPool2d(3, 2, 1)`` 1.25x, a depthwise-separable stack's stem 1.22x the prediction;
    with a flatten head 0.96-1.02x)."""
    events: list[str] = []
    glob = -1
    for seg in segments:
        for s in (*seg.get("layers", ()), *seg.get("shortcut", ()), seg):
            for b in s.get("between", ()) if s is not seg else seg.get("between", ()):
                if b.kind in ("avg", "max"):
                    if b.kind == "avg" and b.out_positions == 1:
                        glob = len(events)
                    events.append(f"{b.label}, whose windows overlap," if b.overlap else "")
            m = s.get("module")
            if (isinstance(m, nn.modules.conv._ConvNd) and not m.transposed and m.groups > 1
                    and m.groups == m.in_channels and s.get("activation") is not None):
                events.append(f"the depthwise conv '{s.get('name')}' with its activation")
            elif m is not None:
                events.append("")
    return list(dict.fromkeys(e for e in events[:max(glob, 0)] if e))


def _fewest_channels_per_group(segments: list[dict]) -> int | None:
    """The fewest channels per group (``num_channels / num_groups``) of the chain's
    ``GroupNorm`` modules after a layer; None without one, named in the approximation note.
    Under a global average pool the gradient a group's mean removes grows as this shrinks
    (:func:`~depthlab.torch.propagation.pool_factor` models it; before it did, ReLU CNNs
    measured 0.41-0.43x the prediction at 1, 0.67-0.72x at 2, 0.83-0.86x at 4)."""
    ks = []
    for seg in segments:
        for s in (seg, *seg.get("layers", ()), *seg.get("shortcut", ())):
            norm = s.get("norm")
            cg = norms.groups(norm)  # GroupNorm; InstanceNorm: one channel per group
            if cg is not None:
                ks.append(cg[0] // cg[1])
    return min(ks) if ks else None


def _spatial_norms(segments: list[dict]) -> list[str]:
    """The names of the per-example norms (after a layer or between segments) that
    normalize over positions as well as units (GroupNorm, LayerNorm((C, H, W)))."""
    found = []
    for seg in segments:
        inner = [*seg.get("layers", ()), *seg.get("shortcut", ())]
        for s in (seg, *inner):
            norm = s.get("norm")
            shape = s.get("out_shape")
            if norm is not None and not isinstance(norm, (nn.BatchNorm1d, nn.BatchNorm2d,
                                                           nn.BatchNorm3d)) \
                    and shape is not None and len(shape) > 2:
                found.append(type(norm).__name__)
    found += [b.label for seg in segments for b in _all_betweens(seg)
              if b.kind == "norm" and b.norm.n > b.norm.k]
    return found


def _run(segments: list[dict], state: tuple) -> tuple[list[dict], list[float]]:
    """The rows of the forward pass from the input ``state`` and ``Var(dL/ds)`` per row
    (relative: ``Var(dL/da) = 1`` at the last segment's output)."""
    rows: list[dict] = []
    prof = None  # E[a^2] per position (mean 1) out of a zero-padded conv chain
    after_layer = False  # the previous segment was a plain layer (its row is rows[-2])
    links: list[tuple[int, list]] = []  # (row, the between modules above it) of layer pairs
    for seg in segments:
        if seg["kind"] == "layer":
            seg["_prof_in"] = prof
            state = _forward(seg, state, rows)
            prof = seg.pop("_prof_out", None)
            items = seg["_between"]
            if after_layer and len(rows) > 1:
                links.append((len(rows) - 2, items))
            after_layer = True
            continue
        after_layer = False
        prof = None
        state = _between_forward(seg, state)
        first = len(rows)
        entry = state[3]
        a_sq, a_mean, a_bvar, (av, aw) = _path_forward(seg["layers"], state, rows)[:4]
        c = seg.get("scale", 1.0)  # x + c F(x): the branch's values times c
        a_sq, a_mean, a_bvar, av = c * c * a_sq, c * a_mean, c * c * a_bvar, c * np.asarray(av)
        p = seg.get("drop", 0.0)
        if p > 0:  # x + drop(F(x)): F's value / (1 - p) with probability 1 - p, else 0 (node 0)
            a_bvar += a_sq * p / (1 - p) if p < 1 else 0.0
            a_sq = a_sq / (1 - p) if p < 1 else 0.0
            av = np.concatenate([[0.0], av / (1 - p) if p < 1 else np.zeros_like(av)])
            aw = np.concatenate([[p], np.asarray(aw) * (1 - p)])
        mid = len(rows)
        b_state = _path_forward(seg["shortcut"], state, rows)
        b_sq, b_mean, b_bvar, (bv, bw) = b_state[:4]
        # x + F(x) (or P(x) + F(x)): the paths are independent at init (independent
        # weights), so a unit's value is the sum of two independent values: the
        # distribution of the sum (a convolution on the nodes; the skip keeps e.g. a ReLU
        # output's skewed, non-negative shape), batch variances add
        k = seg.get("sum_scale", 1.0)  # post(k (x + F(x))): (x + F(x)) / sqrt(2)
        ssum = k * (av[:, None] + bv[None, :]).ravel()
        wsum = (aw[:, None] * bw[None, :]).ravel()
        pv, pd_ = _apply(seg["post"], ssum)
        p_mean, p_sq = _dot(wsum, pv), _dot(wsum, pv * pv)
        post_dsq = _dot(wsum, pd_ * pd_)
        p_bvar = p_sq - p_mean ** 2 if seg["post"] is not None else k * k * (a_bvar + b_bvar)
        p_dist = pooling.compress(pv, wsum)
        fixed = norms.fixed_share(b_state[3]) if seg["post"] is None else 0.0
        if fixed > 0:  # the skip carries a norm's output: its share of the sum's variance
            # is the same in every example (:func:`depthlab.torch.norms.fixed_share`)
            var_b = max(b_sq - b_mean ** 2, 0.0)
            var_s = var_b + max(a_sq - a_mean ** 2, 0.0)
            p_dist = norms.Fixed(p_dist, fixed * var_b / var_s if var_s > 0 else 0.0)
        state = (p_sq, p_mean, max(p_bvar, 0.0), p_dist)
        seg["_rows"] = (first, mid, len(rows), post_dsq)
        seg["_dist"] = (entry, (av, aw), (bv, bw))
    _pool_above(rows, links)
    # backward: G = Var(dL/d output of the current segment), 1 at the last layer's output
    grad = [0.0] * len(rows)
    g_out = 1.0
    v_of_x = None  # Var(dL/dx | x) on the nodes of the stream's distribution (identity skips)
    g_prof = None  # Var(dL/ds) per position (mean 1) in a zero-padded conv chain
    k = len(rows)
    # residual blocks under a global average pool: the pooled gradient g_c of a channel
    # reaches the stream's positions as g_c h(y_p) (``coh`` = (Var(g_c), the table of h over
    # the unit's value, None for h = 1); the pool's ratio where it is the module right above
    coh, pool_ratio = None, None
    for seg in reversed(segments):
        if seg["kind"] == "layer":
            k -= 1
            fix = rows[k].get("pool_fix")
            below = 0.0
            if coh is not None and fix is not None and not rows[k].get("pool_done") \
                    and g_out > 0:
                # a stem under residual blocks (:func:`_pool_above` takes layer -> layer
                # links): the share alike over a channel's positions, Var(g_c) E[h]^2
                phi = min(coh[0] * (1.0 if coh[1] is None else _dot(coh[3], coh[2]) ** 2)
                          / g_out, 1.0)
                factor, below = pool_factor(fix, fix[8] / fix[4], phi)
                _scale_grad(rows[k], factor)
            pool_ratio = _global_pool_above(rows[k]["between"])
            # a weight layer mixes units: no dependence on one unit's value, unless max
            # pooling before it sends the gradient to the largest entries
            g_out, v_of_x = _backward(rows, grad, k, g_out, v_of_x)
            coh = ((g_out, None, None, None) if pool_ratio is not None else None
                   if rows[k]["between"] or below <= 0 else (below * g_out, None, None, None))
            mats = rows[k].get("mats")
            if mats is not None:  # zero padding: fewer outputs send a gradient to the border
                ones = np.ones([mm.shape[0] for mm in mats])
                gp = g_prof if g_prof is not None and g_prof.shape == ones.shape else ones
                a1, ag = _along(mats, ones, True), _along(mats, gp, True)
                g_out *= float(ag.mean()) / float(a1.mean())
                plain_below = k > 0 and rows[k - 1].get("plain") and not rows[k]["between"]
                d_prof = rows[k - 1]["d_prof"] if plain_below else None
                if d_prof is not None and d_prof.shape == ag.shape:  # E f'^2 per position
                    # where the gradient arrives: mean_p G_p E f'(s_p)^2 (a ReLU's 0 at the
                    # holes a ConvTranspose leaves on the border, which a padded conv above
                    # reads less, was 0.95x of the measurement as mean G times mean E f'^2)
                    g_out *= float((ag * d_prof).mean()) / max(float(ag.mean()), 1e-300)
                    ag = ag * d_prof
                g_prof = ag / float(ag.mean()) if plain_below and ag.mean() > 0 else None
            else:
                g_prof = None
            continue
        g_prof = None
        first, mid, last, _ = seg["_rows"]
        (xv, xw), (fv, fw), _ = seg["_dist"]
        identity = mid == last
        k = seg.get("sum_scale", 1.0)  # post(k (x + F)): dL/d(x + F) = k post' dL/dy
        if identity:  # y = post(x + F), F independent of x: condition on the unit's x
            sv = k * (xv[:, None] + fv[None, :])
        else:  # y = post(P(x) + F): both independent of the unit's x
            sv = k * (seg["_dist"][2][0][:, None] + fv[None, :])
            xw = seg["_dist"][2][1]
        yv, dv = _apply(seg["post"], sv)
        after = k * k * (g_out if v_of_x is None else np.interp(yv, v_of_x[0], v_of_x[1]))
        inner = (dv * dv * after * fw[None, :]).sum(1)  # E[f'(s)^2 Var(dL/dy | y) | x]
        g_pre = _dot(xw, inner)
        p = seg.get("drop", 0.0)
        g_in = g_pre
        if p > 0:  # x + drop(F(x)): dL/dF = m / (1 - p) dL/d(sum) on the kept entries (fv's
            # nodes 1...; node 0 is the dropped value), Var = E[. | kept] / (1 - p)
            kept = (dv[:, 1:] ** 2 * after[:, 1:] * fw[None, 1:]).sum(1) if np.ndim(after) \
                else (dv[:, 1:] ** 2 * after * fw[None, 1:]).sum(1)
            g_in = _dot(xw, kept) / (1 - p) ** 2 if p < 1 else 0.0
        phi_b = phi_s = 0.0
        h_x = None
        if coh is not None and g_pre > 0 and k == 1.0:  # (not for a scaled sum: dropped)
            # under a global pool the sum's gradient holds g_c post'(s) h(post(s)), a share
            # Var(g_c) E[post'^2 h^2] / Var(dL/d sum) of it, which the norm ending each
            # path sees through post'(x + y) h (:func:`_pooled_path`)
            def deriv(z: np.ndarray, post: Any = seg["post"], table: tuple = coh) -> np.ndarray:
                out, dz = _apply(post, z)
                return dz if table[1] is None else dz * np.interp(out, table[1], table[2])
            eff = deriv(sv)
            phi_u = min(coh[0] * _dot(xw[:, None] * fw[None, :], eff * eff) / g_pre, 1.0)
            phi_b = _pooled_path(rows, first, mid, phi_u, pool_ratio, deriv,
                                 (sv[:, 0] - fv[0], xw))
            if identity:  # the skip passes g_c h_x(x), h_x(x) = E_F[post' h | x]
                h_x = (eff * fw[None, :]).sum(1)
            else:
                phi_s = _pooled_path(rows, mid, last, phi_u, pool_ratio, deriv, (fv, fw))
        # both paths: the branch and the shortcut (the identity when it has no layers)
        # x + c F(x): dL/dF = c dL/d(sum), Var times c^2
        g_branch = _path_backward(rows, grad, first, mid, seg.get("scale", 1.0) ** 2 * g_in)
        g_short = _path_backward(rows, grad, mid, last, g_pre)
        g_out = g_branch + g_short
        if coh is None or seg["_between"] or k != 1.0:
            coh = None
        elif h_x is not None:  # the branch's own share alike (independent g_c') added
            order = np.argsort(xv, kind="stable")
            mh = _dot(xw, h_x)
            extra = phi_b * g_branch / (mh * mh) if mh > 0 else 0.0
            coh = (coh[0] + extra, xv[order], h_x[order], xw[order])
        else:  # a projection mixes the channels: alike again, h = 1
            coh = (phi_b * g_branch + phi_s * g_short, None, None, None)
            coh = coh if coh[0] > 0 else None
        pool_ratio = None
        v_of_x = pooling.table(xv, inner + g_branch) if identity else None
        g_out, v_of_x = _between_backward(seg["_between"], g_out, v_of_x)
        k = first
    return rows, grad


def _pool_above(rows: list[dict], links: list[tuple[int, list]]) -> None:
    """A per-example norm's row whose activation an average pool reads (``Conv -> GroupNorm
    -> ReLU -> global average pool``): its ``dsq`` times
    :func:`depthlab.torch.propagation.pool_factor` (the gradient alike over a window's
    positions, which the norm's mean and ``xhat`` direction remove more of than of an isotropic
    one); under a global pool, the share of the gradient alike over a channel's positions that
    the layers below receive through their convs (no module in between) too."""
    phi = {}  # row -> share of Var(dL/da) alike over all positions of a channel
    for j, items in sorted(links, reverse=True):
        fix = rows[j].get("pool_fix")
        if fix is None:
            continue
        n, k = fix[4], fix[8]
        if items and items[0][0].kind == "avg":
            ratio, share = items[0][0].ratio, 1.0
            glob = ratio * n / k <= 1.0 + 1e-9  # one output per channel
        elif not items and phi.get(j + 1, 0.0) > 0:
            ratio, share, glob = k / n, phi[j + 1], True
        else:
            continue
        factor, below = pool_factor(fix, ratio, share)
        _scale_grad(rows[j], factor)
        if glob:
            phi[j] = below


def _scale_grad(row: dict, factor: float) -> None:
    """Multiply a row's ``Var(dL/ds)`` per ``Var(dL/da)`` by ``factor`` (both the mean
    ``dsq`` and the node rule's scale that an identity skip's table reads) and mark it done."""
    row["dsq"] *= factor
    nodes = row.get("nodes")
    if nodes is not None:
        row["nodes"] = (*nodes[:3], nodes[3] * factor)
    row["pool_done"] = True


def _global_pool_above(items: list) -> float | None:
    """The ``ratio`` of an average pool that is the first module above a layer's output
    (None without one), which makes the gradient alike over a window's positions."""
    if items and items[0][0].kind == "avg":
        return float(items[0][0].ratio)
    return None


def _pooled_path(rows: list[dict], lo: int, hi: int, phi: float, ratio: float | None,
                 deriv: Callable[[np.ndarray], np.ndarray], other: tuple) -> float:
    """Inside a residual block under a global average pool: the factor of
    :func:`depthlab.torch.propagation.pool_factor` on each per-example norm's row of the path
    ``rows[lo:hi]``, whose output is added to the other path's value (``other``: nodes,
    weights) before the block's activation (the last row's moments through ``deriv(x + y) =
    post'(x + y) h(post(x + y))``, :func:`depthlab.torch.propagation.sum_pool_moments`;
    ``phi`` the share of ``Var(dL/d sum)`` that is ``g_c deriv``), and down the
    path's convs as in :func:`_pool_above`. Returns the share of ``Var(dL/d input)`` that is
    still alike over a channel's positions (0 where a row is not such a norm or a module sits
    between rows)."""
    j = hi - 1
    fix, src = rows[j].get("pool_fix"), rows[j].get("pool_src")
    if fix is None or src is None or rows[j].get("pool_done"):
        return 0.0
    n, k = fix[4], fix[8]
    ratio = k / n if ratio is None else ratio
    if ratio * n / k > 1.0 + 1e-9:  # a window pool: alike over windows, not carried here
        return 0.0
    factor, below = pool_factor(sum_pool_moments(fix, src, deriv, *other), ratio, phi)
    _scale_grad(rows[j], factor)
    while j > lo:
        fix = rows[j - 1].get("pool_fix")
        if rows[j]["between"] or fix is None or below <= 0 or rows[j - 1].get("pool_done"):
            return 0.0
        j -= 1
        factor, below = pool_factor(fix, fix[8] / fix[4], below)
        _scale_grad(rows[j], factor)
    return below


GROUPS = 4
"""Groups of examples (by quantiles of their mean square) that :func:`predict` propagates
separately (:func:`_input_groups`)."""
_SAME = 0.02


def _not_a_tensor(x: Any) -> str:
    """The refusal of an ``x`` that is not one tensor: a tuple, list or dict of tensors (a
    forward of several inputs, ``model(src, tgt)`` or ``model(**batch)``, which ``dlt.probe``
    measures) is named as such, since the theory propagates one input through ``model(x)``;
    anything else gets the remedy ``torch.as_tensor(x)``."""
    parts = list(x.values()) if isinstance(x, dict) else list(x) \
        if isinstance(x, (tuple, list)) else []
    if any(isinstance(v, torch.Tensor) for v in parts):
        many = "s" if len(parts) > 1 else ""
        what = (f"a dict of {len(parts)} keyword input{many} ({', '.join(map(repr, x))})"
                if isinstance(x, dict) else f"a {type(x).__name__} of {len(parts)} input{many}")
        return (f"x must be one floating-point tensor (predict() propagates the variance of "
                f"one input through model(x)), got {what}; dlt.probe measures a model of "
                "several or keyword inputs")
    return (f"x must be a floating-point tensor, got {type(x).__name__} (torch.as_tensor(x) "
            "makes one)")


def _batched(x64: torch.Tensor, first: dict) -> torch.Tensor:
    """``x64`` with a batch dimension of one where it is one example without it (a conv's
    unbatched input, which torch takes: ``(C, H, W)`` for a Conv2d): its first dimension was
    read as the examples, channels taken for examples (a Conv2d on one (3, 7, 7) image: the
    second layer's pre_std predicted 1.17x that of the same image as a batch of one). (A
    Linear's ``(D,)`` is refused before, as a batch of D examples.)"""
    seg = first if first["kind"] == "layer" else (first["layers"] or first["shortcut"])[0]
    module = seg["module"]
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d,
                           nn.ConvTranspose2d, nn.ConvTranspose3d)) \
            and x64.dim() == module.weight.dim() - 1:
        return x64.unsqueeze(0)
    return x64


def _deviation(x64: torch.Tensor, first: dict) -> torch.Tensor:
    """``x`` less the mean that a unit of the first layer holds over the batch: a feature's
    mean over the examples before a ``Linear``; before a conv, whose unit is a channel, an
    input channel's mean over the examples and its positions (a BatchNorm after the conv
    normalizes over both). Taken over the examples only, a batch of one image had no batch
    variance at all (``Conv2d -> BatchNorm2d``: layer 1's grad_pre_std predicted 150x the
    measurement), and an image's mean pattern over positions counted as the units' means."""
    seg = first if first["kind"] == "layer" else (first["layers"] or first["shortcut"])[0]
    module = seg["module"]
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d,
                           nn.ConvTranspose2d, nn.ConvTranspose3d)) \
            and x64.dim() == module.weight.dim():
        dims = [0, *range(2, x64.dim())]
        return x64 - x64.mean(dim=dims, keepdim=True)
    return x64 - x64.mean(dim=0, keepdim=True)


def _input_groups(x64: torch.Tensor, dev: torch.Tensor | None = None
                  ) -> list[tuple[float, tuple]]:
    """The batch as at most :data:`GROUPS` groups of examples of similar mean square
    ``|x_i|^2 / d`` (equal counts, by quantiles), each with its weight (its share of the
    batch) and its input state ``(E[x^2], E[x], E|dev_i|^2 / d, distribution)`` (``dev``:
    :func:`_deviation`)
    over its examples. An activation whose ``E f(s)^2`` is not proportional to ``Var(s)``
    (tanh, sigmoid, gelu, Tanhshrink) gives a batch of varied example lengths other moments
    than one example of the average length (``E_i[E f(sqrt(q_i) z)^2] !=
    E f(sqrt(E q_i) z)^2``); for ReLU and linear layers without biases' or BatchNorm's
    offsets the two agree. No split (an empty list) for one example or when the examples'
    mean squares vary by less than :data:`_SAME` relative (std / mean): the difference is
    second order in that spread (``f''(q) Var(q_i) / 2``)."""
    n = int(x64.shape[0])
    flat = x64.reshape(n, -1)
    sq = flat.pow(2).mean(1).cpu().numpy()
    if n < 2 or sq.std() <= _SAME * sq.mean():
        return []
    means = flat.mean(1).cpu().numpy()
    if dev is None:
        dev = x64 - x64.mean(dim=0, keepdim=True)
    cen = dev.reshape(n, -1).pow(2).mean(1).cpu().numpy()
    out = []
    for idx in np.array_split(np.argsort(sq, kind="stable"), min(GROUPS, n)):
        sq_g, m_g = float(sq[idx].mean()), float(means[idx].mean())
        out.append((idx.size / n, (sq_g, m_g, float(cen[idx].mean()),
                                   _gauss_dist(None, max(sq_g - m_g * m_g, 0.0), m_g))))
    return out


def _combine(runs: list[tuple[float, list[dict], list[float]]]
             ) -> tuple[list[dict], list[float]]:
    """One row per layer from the groups' runs (weights ``w_g``): ``Var(s)`` over the batch
    ``= sum_g w_g (q_g + shift_g^2) - (sum_g w_g shift_g)^2`` (the groups' means differ),
    ``Var(a) = sum_g w_g E_g[a^2] - (sum_g w_g E_g[a])^2``, ``Var(dL/ds) = sum_g w_g
    Var_g(dL/ds)`` (each group's gradient from ``Var(dL/da) = 1`` at the output)."""
    w = np.array([r[0] for r in runs])
    rows = []
    for j, row in enumerate(runs[0][1]):
        col = {k: np.array([r[1][j][k] for r in runs]) for k in ("q", "shift", "sq", "mean")}
        m = float(w @ col["shift"])
        am = float(w @ col["mean"])
        rows.append({**row, "q": max(float(w @ (col["q"] + col["shift"] ** 2)) - m * m, 0.0),
                     "act_var": max(float(w @ col["sq"]) - am * am, 0.0)})
    grad = [float(w @ np.array([r[2][j] for r in runs])) for j in range(len(rows))]
    return rows, grad


def _all_betweens(seg: dict) -> list[pooling.Between]:
    """The pooling/dropout modules before a segment and inside a block's paths."""
    inner = [b for s in (*seg.get("layers", ()), *seg.get("shortcut", ()))
             for b in s.get("between", ())]
    return [*seg.get("between", ()), *inner]


def theory_rows(model: nn.Module, x: torch.Tensor) -> tuple[list[dict[str, Any]] | None, str]:
    """:func:`predict` of ``model`` on the inputs ``x`` as the theory rows a report draws dashed
    beside the measurement (``layer``, ``grad_pre_var`` relative to the last layer,
    ``act_var``; the report scales the gradient to the run's measured top layer) and a note;
    ``(None, why)`` when the model is not a chain the theory covers (attention, recurrent
    layers, pooling other than average and max pooling, ...); the note says where pooling
    windows were taken as independent. The model, its gradients, buffers and the random
    number generators are left as they were (:func:`predict` runs isolated)."""
    try:
        df = predict(model, x)
    except (ValueError, TypeError, RuntimeError) as exc:
        return None, f"no theory: {exc}"
    wide = df.pivot_table(index="layer", columns="quantity", values="predicted")
    rows = []
    for layer, r in wide.iterrows():
        act = r.get("act_std", math.nan)
        rows.append({"layer": int(layer), "grad_pre_var": float(r["grad_pre_std"]) ** 2,
                     "act_var": float(act) ** 2 if math.isfinite(act) else None})
    note = "theory: depthlab.torch.predict (variance propagation from the actual weights)"
    extra = df.attrs.get("approximation")
    return rows, f"{note}; {extra}" if extra else note
