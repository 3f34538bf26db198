//! Variational Bayesian Gaussian mixture in one dimension with a Dirichlet-process
//! (stick-breaking) weight prior: scikit-learn's `BayesianGaussianMixture` with
//! `weight_concentration_prior_type="dirichlet_process"`, written out for 1-D data.

use serde::{Deserialize, Serialize};
use statrs::function::beta::ln_beta;
use statrs::function::gamma::{digamma, ln_gamma};

use crate::ModelError;
use crate::binned::Histogram;
use crate::estep::{LogRho, Moments, Sorted, e_step, e_step_weighted, label_moments};
use crate::kmeans::{kmeans_labels_of_sorted, weighted_kmeans_labels};

const LN_2PI: f64 = 1.837_877_066_409_345_3;

/// Hyper-parameters of the mixture, as scikit-learn names them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MixtureParams {
    /// Components before pruning (`n_components`).
    pub n_components: usize,
    /// Dirichlet-process concentration (`weight_concentration_prior`).
    pub weight_concentration_prior: f64,
    /// Iterations at most (`max_iter`).
    pub max_iter: usize,
    /// Stop when the lower bound moves less than this (`tol`).
    pub tol: f64,
    /// Added to every variance (`reg_covar`).
    pub reg_covar: f64,
    /// Components whose weight exceeds this are kept (CTGAN's 0.005).
    pub weight_threshold: f64,
    /// Seed of the k-means start.
    pub seed: u64,
}

impl Default for MixtureParams {
    fn default() -> Self {
        Self {
            n_components: 10,
            weight_concentration_prior: 1e-3,
            max_iter: 100,
            tol: 1e-3,
            reg_covar: 1e-6,
            weight_threshold: 5e-3,
            seed: 0,
        }
    }
}

/// [`MixtureParams`] that passed [`MixtureParams::check`].
#[derive(Clone, Debug)]
pub struct ValidMixtureParams(MixtureParams);

impl MixtureParams {
    /// Validate the parameters.
    ///
    /// # Errors
    /// [`ModelError::InvalidParams`] naming the first parameter out of range.
    // Negated comparisons on purpose: NaN must fail every check.
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    pub fn check(self) -> Result<ValidMixtureParams, ModelError> {
        let bad = |what: &str| Err(ModelError::InvalidParams(what.to_string()));
        if self.n_components == 0 || self.n_components > usize::from(u16::MAX) {
            return bad("n_components must be in 1..=65535");
        }
        if !(self.weight_concentration_prior > 0.0) {
            return bad("weight_concentration_prior must be > 0");
        }
        if self.max_iter == 0 {
            return bad("max_iter must be at least 1");
        }
        if !(self.tol >= 0.0) || !(self.reg_covar >= 0.0) {
            return bad("tol and reg_covar must be >= 0");
        }
        if !(0.0..1.0).contains(&self.weight_threshold) {
            return bad("weight_threshold must be in [0, 1)");
        }
        Ok(ValidMixtureParams(self))
    }
}

impl ValidMixtureParams {
    /// The validated parameters.
    pub fn get(&self) -> &MixtureParams {
        &self.0
    }
}

/// A fitted mixture: the variational posterior plus the quantities users read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mixture {
    /// Expected component weights (sum to 1).
    pub weights: Vec<f64>,
    /// Component means.
    pub means: Vec<f64>,
    /// Component standard deviations (square roots of `covariances`).
    pub stds: Vec<f64>,
    /// Component variances (scikit-learn's `covariances_`).
    pub covariances: Vec<f64>,
    /// Components whose weight exceeds the threshold.
    pub valid: Vec<bool>,
    /// Beta posterior of the stick-breaking weights (`weight_concentration_`), first half.
    pub weight_concentration_a: Vec<f64>,
    /// Beta posterior of the stick-breaking weights, second half.
    pub weight_concentration_b: Vec<f64>,
    /// `mean_precision_`.
    pub mean_precision: Vec<f64>,
    /// `degrees_of_freedom_`.
    pub degrees_of_freedom: Vec<f64>,
    /// Evidence lower bound at the end of the fit.
    pub lower_bound: f64,
    /// Iterations run.
    pub n_iter: usize,
    /// Whether the lower bound settled before `max_iter`.
    pub converged: bool,
}

/// The prior of every component. scikit-learn's defaults (`Priors::from_data`) are the
/// same for all components; the streaming update uses the previous posterior instead.
struct Priors {
    /// Beta prior of the stick-breaking weights: 1 and `weight_concentration_prior`.
    a0: Vec<f64>,
    b0: Vec<f64>,
    /// `mean_precision_prior`, `mean_prior`, `degrees_of_freedom_prior`.
    beta0: Vec<f64>,
    m0: Vec<f64>,
    nu0: Vec<f64>,
    /// Inverse-Wishart scale (`covariance_prior`; scikit-learn's covariances are this
    /// scale over the degrees of freedom).
    psi0: Vec<f64>,
    reg: f64,
}

impl Priors {
    /// scikit-learn's `_check_parameters` defaults: mean and variance (ddof 1) of `x`.
    fn from_data(x: &[f64], k: usize, p: &MixtureParams) -> Self {
        let n = x.len();
        let mean = x.iter().sum::<f64>() / n as f64;
        let var = if n > 1 { x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64 } else { 0.0 };
        Self::from_mean_and_variance(mean, var, k, p)
    }

    /// The defaults given the data's mean and variance (ddof 1).
    fn from_mean_and_variance(mean: f64, var: f64, k: usize, p: &MixtureParams) -> Self {
        Self {
            a0: vec![1.0; k],
            b0: vec![p.weight_concentration_prior; k],
            beta0: vec![1.0; k],
            m0: vec![mean; k],
            nu0: vec![1.0; k],
            psi0: vec![var; k],
            reg: p.reg_covar,
        }
    }

    /// A fitted posterior as the next prior (conjugate streaming update).
    fn from_posterior(post: &Posterior, reg: f64) -> Self {
        Self {
            a0: post.a.clone(),
            b0: post.b.clone(),
            beta0: post.beta.clone(),
            m0: post.m.clone(),
            nu0: post.nu.clone(),
            psi0: post.c.iter().zip(&post.nu).map(|(c, nu)| c * nu).collect(),
            reg,
        }
    }
}

/// The variational posterior after an M-step.
struct Posterior {
    a: Vec<f64>,
    b: Vec<f64>,
    beta: Vec<f64>,
    m: Vec<f64>,
    nu: Vec<f64>,
    c: Vec<f64>,
}

impl Posterior {
    /// The posterior stored in a fitted mixture.
    ///
    /// # Errors
    /// [`ModelError::InvalidParams`] when its vectors differ in length or hold values a
    /// posterior cannot have (non-positive concentrations, precisions or variances).
    fn from_mixture(mix: &Mixture) -> Result<Self, ModelError> {
        let k = mix.means.len();
        let parts = [
            &mix.weight_concentration_a,
            &mix.weight_concentration_b,
            &mix.mean_precision,
            &mix.degrees_of_freedom,
            &mix.covariances,
        ];
        let positive = |v: &Vec<f64>| v.len() == k && v.iter().all(|x| x.is_finite() && *x > 0.0);
        if k == 0 || !parts.iter().all(|v| positive(v)) || !mix.means.iter().all(|m| m.is_finite()) {
            return Err(ModelError::InvalidParams(
                "the previous mixture is not a fitted posterior (lengths differ or values are out of range)".into(),
            ));
        }
        Ok(Self {
            a: mix.weight_concentration_a.clone(),
            b: mix.weight_concentration_b.clone(),
            beta: mix.mean_precision.clone(),
            m: mix.means.clone(),
            nu: mix.degrees_of_freedom.clone(),
            c: mix.covariances.clone(),
        })
    }
}

/// Fit with scikit-learn's default start: labels from seeded k-means.
///
/// # Errors
/// [`ModelError::EmptySample`] when `x` is empty, [`ModelError::NonFinite`] when it
/// holds NaN or infinity.
pub fn fit(x: &[f64], params: &ValidMixtureParams) -> Result<Mixture, ModelError> {
    check_sample(x)?;
    let k = params.0.n_components.min(x.len());
    // One sort serves the k-means and the E-steps.
    let sorted = Sorted::new(x);
    let labels = kmeans_labels_of_sorted(x, sorted.values(), k, params.0.seed);
    start_from_labels(x, &sorted, &labels, params)
}

/// Fit starting from given labels (one per value, each `< n_components`), as
/// scikit-learn does after its k-means: one-hot responsibilities, one M-step, then
/// E/M iterations until the lower bound settles.
///
/// # Errors
/// As [`fit`], plus [`ModelError::InvalidParams`] when a label is out of range.
pub fn fit_from_labels(x: &[f64], labels: &[usize], params: &ValidMixtureParams) -> Result<Mixture, ModelError> {
    check_sample(x)?;
    start_from_labels(x, &Sorted::new(x), labels, params)
}

/// [`fit_from_labels`] on a checked sample, sorted.
fn start_from_labels(
    x: &[f64],
    sorted: &Sorted,
    labels: &[usize],
    params: &ValidMixtureParams,
) -> Result<Mixture, ModelError> {
    let p = &params.0;
    let k = p.n_components.min(x.len());
    if labels.len() != x.len() || labels.iter().any(|&l| l >= k) {
        return Err(ModelError::InvalidParams(format!("need one label in 0..{k} per value")));
    }
    let priors = Priors::from_data(x, k, p);
    let post = m_step(&label_moments(x, labels, k), &priors);
    Ok(iterate(sorted, post, &priors, f64::NEG_INFINITY, p))
}

/// Fit on every row a [`Histogram`] holds, in O(bins) per iteration: the same model,
/// priors and k-means++ start as [`fit`], each bin a point weighted by its rows, with its
/// exact mean and within-bin variance (see [`crate::binned`]). A bin's rows share one
/// responsibility vector; bins are 2^-12 of their value wide, far narrower than any
/// component that matters, so the fit is that of the rows to well within sampling noise.
/// The same histogram gives the same bits on any thread count, however it was merged.
///
/// # Errors
/// [`ModelError::EmptySample`] when the histogram holds no finite value.
pub fn fit_histogram(histogram: &Histogram, params: &ValidMixtureParams) -> Result<Mixture, ModelError> {
    if histogram.is_empty() {
        return Err(ModelError::EmptySample);
    }
    let p = &params.0;
    let points = histogram.points();
    let k = p.n_components.min(usize::try_from(histogram.rows()).unwrap_or(usize::MAX));
    let moments = |q: &crate::binned::Point| Moments { n: q.weight, mean: q.value, m2: q.weight * q.variance };
    let total = points.iter().fold(Moments::default(), |acc, q| acc.merge(moments(q)));
    let var = if total.n > 1.0 { total.m2 / (total.n - 1.0) } else { 0.0 };
    let priors = Priors::from_mean_and_variance(total.mean, var, k, p);
    let values: Vec<f64> = points.iter().map(|q| q.value).collect();
    let weights: Vec<f64> = points.iter().map(|q| q.weight).collect();
    let labels = weighted_kmeans_labels(&values, &weights, k, p.seed);
    let mut start = vec![Moments::default(); k];
    for (q, &label) in points.iter().zip(&labels) {
        start[label] = start[label].merge(moments(q));
    }
    let post = m_step(&start, &priors);
    Ok(iterate_on(|lr| e_step_weighted(&points, lr), post, &priors, f64::NEG_INFINITY, p))
}

/// Refit on `x` starting from `previous`, as scikit-learn's `warm_start=True` does on a
/// second call to `fit`: the priors come from `x` alone, the iterations start from the
/// previous posterior (no k-means), and the previous lower bound is the first one the
/// change is measured against. Fitting shard after shard this way mostly reflects the
/// last shards; [`fit_streaming`] weighs every shard.
///
/// # Errors
/// As [`fit`], plus [`ModelError::InvalidParams`] when `previous` is not a fitted posterior.
pub fn fit_warm_start(x: &[f64], previous: &Mixture, params: &ValidMixtureParams) -> Result<Mixture, ModelError> {
    check_sample(x)?;
    let post = Posterior::from_mixture(previous)?;
    let priors = Priors::from_data(x, post.a.len(), &params.0);
    Ok(iterate(&Sorted::new(x), post, &priors, previous.lower_bound, &params.0))
}

/// Streaming variational update: `prior`'s posterior becomes the prior for `x`, and the
/// iterations start from it. After shards 1..t the result approximates the posterior
/// given all of them (assumed-density filtering, Broderick et al. 2013), so every shard
/// counts in proportion to its rows.
///
/// # Errors
/// As [`fit_warm_start`].
pub fn fit_streaming(x: &[f64], prior: &Mixture, params: &ValidMixtureParams) -> Result<Mixture, ModelError> {
    check_sample(x)?;
    let post = Posterior::from_mixture(prior)?;
    let priors = Priors::from_posterior(&post, params.0.reg_covar);
    Ok(iterate(&Sorted::new(x), post, &priors, f64::NEG_INFINITY, &params.0))
}

/// E/M iterations from `post` until the lower bound moves less than `tol`.
fn iterate(x: &Sorted, post: Posterior, priors: &Priors, start_bound: f64, p: &MixtureParams) -> Mixture {
    iterate_on(|lr| e_step(x, lr), post, priors, start_bound, p)
}

/// [`iterate`] with the E-step over any data.
fn iterate_on(
    e_step: impl Fn(&LogRho) -> crate::estep::Stats,
    mut post: Posterior,
    priors: &Priors,
    start_bound: f64,
    p: &MixtureParams,
) -> Mixture {
    let mut lower_bound = start_bound;
    let mut n_iter = 0;
    let mut converged = false;
    for iter in 1..=p.max_iter {
        n_iter = iter;
        let lr = LogRho::new(&post.a, &post.b, &post.beta, &post.m, &post.nu, &post.c);
        let stats = e_step(&lr);
        post = m_step(&stats.moments, priors);
        let previous = lower_bound;
        lower_bound = bound(&post, stats.sum_r_ln_r);
        if (lower_bound - previous).abs() < p.tol {
            converged = true;
            break;
        }
    }
    finish(post, lower_bound, n_iter, converged, p.weight_threshold)
}

fn check_sample(x: &[f64]) -> Result<(), ModelError> {
    if x.is_empty() {
        return Err(ModelError::EmptySample);
    }
    if let Some(bad) = x.iter().find(|v| !v.is_finite()) {
        return Err(ModelError::NonFinite(*bad));
    }
    Ok(())
}

/// scikit-learn's `_estimate_gaussian_parameters` then the variational updates, from the
/// per-component moments of the responsibilities.
fn m_step(moments: &[Moments], pr: &Priors) -> Posterior {
    let k = moments.len();
    let eps10 = 10.0 * f64::EPSILON;
    // N_k = sum r + 10 eps; xbar_k = sum r x / N_k; S_k = sum r (x - xbar_k)^2 / N_k + reg.
    let nk: Vec<f64> = moments.iter().map(|m| m.n + eps10).collect();
    let xbar: Vec<f64> = moments.iter().zip(&nk).map(|(m, n)| m.n * m.mean / n).collect();
    let sk: Vec<f64> = (0..k)
        .map(|j| {
            let shift = moments[j].mean - xbar[j];
            (moments[j].m2 + moments[j].n * shift * shift) / nk[j] + pr.reg
        })
        .collect();

    let a: Vec<f64> = (0..k).map(|j| pr.a0[j] + nk[j]).collect();
    // gamma_k2 = alpha0 + sum_{j>k} N_j
    let mut b = vec![0.0; k];
    let mut tail = 0.0;
    for j in (0..k).rev() {
        b[j] = pr.b0[j] + tail;
        tail += nk[j];
    }
    let beta: Vec<f64> = (0..k).map(|j| pr.beta0[j] + nk[j]).collect();
    let m: Vec<f64> = (0..k).map(|j| (pr.beta0[j] * pr.m0[j] + nk[j] * xbar[j]) / beta[j]).collect();
    let nu: Vec<f64> = (0..k).map(|j| pr.nu0[j] + nk[j]).collect();
    let c: Vec<f64> = (0..k)
        .map(|j| {
            let d = xbar[j] - pr.m0[j];
            (pr.psi0[j] + nk[j] * sk[j] + nk[j] * pr.beta0[j] / beta[j] * d * d) / nu[j]
        })
        .collect();
    Posterior { a, b, beta, m, nu, c }
}

/// `E[ln pi_k]` under the stick-breaking posterior.
fn expected_log_weights(a: &[f64], b: &[f64]) -> Vec<f64> {
    let mut out = Vec::with_capacity(a.len());
    let mut stick = 0.0;
    for (a, b) in a.iter().zip(b) {
        let ds = digamma(a + b);
        out.push(digamma(*a) - ds + stick);
        stick += digamma(*b) - ds;
    }
    out
}

/// Per component `(constant, mean, 1 / (2 C))` so that
/// `ln rho(x) = constant - (x - mean)^2 / (2 C)`.
impl LogRho {
    fn new(a: &[f64], b: &[f64], beta: &[f64], m: &[f64], nu: &[f64], c: &[f64]) -> Self {
        let elw = expected_log_weights(a, b);
        let constant = (0..a.len())
            .map(|j| {
                elw[j] - 0.5 * LN_2PI - 0.5 * c[j].ln() - 0.5 * nu[j].ln()
                    + 0.5 * (std::f64::consts::LN_2 + digamma(0.5 * nu[j]) - 1.0 / beta[j])
            })
            .collect();
        Self { constant, mean: m.to_vec(), half_precision: c.iter().map(|c| 0.5 / c).collect() }
    }
}

/// The evidence lower bound (scikit-learn's `_compute_lower_bound`, 1-D).
fn bound(post: &Posterior, sum_r_ln_r: f64) -> f64 {
    let mut wishart = 0.0;
    let mut norm_weight = 0.0;
    let mut precision = 0.0;
    for j in 0..post.a.len() {
        let l = -0.5 * post.c[j].ln() - 0.5 * post.nu[j].ln();
        let nu = post.nu[j];
        wishart += nu * l + nu * 0.5 * std::f64::consts::LN_2 + ln_gamma(0.5 * nu);
        norm_weight += ln_beta(post.a[j], post.b[j]);
        precision += post.beta[j].ln();
    }
    -sum_r_ln_r + wishart + norm_weight - 0.5 * precision
}

fn finish(post: Posterior, lower_bound: f64, n_iter: usize, converged: bool, threshold: f64) -> Mixture {
    let k = post.a.len();
    let mut weights = Vec::with_capacity(k);
    let mut stick = 1.0;
    for j in 0..k {
        let total = post.a[j] + post.b[j];
        weights.push(post.a[j] / total * stick);
        stick *= post.b[j] / total;
    }
    let sum: f64 = weights.iter().sum();
    weights.iter_mut().for_each(|w| *w /= sum);
    let valid = weights.iter().map(|w| *w > threshold).collect();
    Mixture {
        weights,
        means: post.m,
        stds: post.c.iter().map(|c| c.sqrt()).collect(),
        covariances: post.c,
        valid,
        weight_concentration_a: post.a,
        weight_concentration_b: post.b,
        mean_precision: post.beta,
        degrees_of_freedom: post.nu,
        lower_bound,
        n_iter,
        converged,
    }
}

impl Mixture {
    pub(crate) fn log_rho(&self) -> LogRho {
        LogRho::new(
            &self.weight_concentration_a,
            &self.weight_concentration_b,
            &self.mean_precision,
            &self.means,
            &self.degrees_of_freedom,
            &self.covariances,
        )
    }

    /// Posterior probability of each component for `x` (scikit-learn's `predict_proba`).
    pub fn predict_proba(&self, x: f64) -> Vec<f64> {
        let lr = self.log_rho();
        let logs: Vec<f64> =
            (0..self.means.len()).map(|j| lr.constant[j] - (x - lr.mean[j]).powi(2) * lr.half_precision[j]).collect();
        let max = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let exps: Vec<f64> = logs.iter().map(|l| (l - max).exp()).collect();
        let sum: f64 = exps.iter().sum();
        exps.into_iter().map(|e| e / sum).collect()
    }

    /// Mean log-likelihood of `x` under the mixture with its expected weights.
    pub fn mean_log_likelihood(&self, x: &[f64]) -> f64 {
        let total: f64 = x
            .iter()
            .map(|v| {
                let p: f64 = (0..self.means.len())
                    .map(|j| {
                        let z = (v - self.means[j]) / self.stds[j];
                        self.weights[j] * (-0.5 * z * z).exp() / (self.stds[j] * (2.0 * std::f64::consts::PI).sqrt())
                    })
                    .sum();
                p.max(f64::MIN_POSITIVE).ln()
            })
            .sum();
        total / x.len() as f64
    }

    /// Indices of the valid components, in one-hot order.
    pub fn valid_components(&self) -> Vec<usize> {
        (0..self.valid.len()).filter(|&j| self.valid[j]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};
    use rand_xoshiro::Xoshiro256PlusPlus;

    fn three_modes(n: usize) -> Vec<f64> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let modes = [(-10.0, 1.0), (0.0, 0.5), (20.0, 2.0)];
        (0..n)
            .map(|i| {
                let (m, s) = modes[i % 3];
                Normal::new(m, s).expect("valid normal").sample(&mut rng)
            })
            .collect()
    }

    #[test]
    fn finds_three_modes() {
        let x = three_modes(6000);
        let params = MixtureParams::default().check().expect("defaults are valid");
        let mix = fit(&x, &params).expect("fit");
        // Every true mode carries a third of the weight, perhaps split over components.
        for mode in [-10.0, 0.0, 20.0] {
            let weight: f64 = (0..mix.means.len())
                .filter(|&j| mix.valid[j] && (mix.means[j] - mode).abs() < 1.0)
                .map(|j| mix.weights[j])
                .sum();
            assert!((weight - 1.0 / 3.0).abs() < 0.02, "mode {mode}: weight {weight}, {mix:?}");
        }
        assert!((mix.weights.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn constant_and_tiny_samples_fit() {
        let params = MixtureParams::default().check().expect("valid");
        let mix = fit(&[3.5; 100], &params).expect("constant");
        assert!(mix.valid.iter().any(|v| *v));
        assert!(mix.stds.iter().all(|s| s.is_finite() && *s > 0.0));
        let tiny = fit(&[1.0, 2.0, 3.0], &params).expect("tiny");
        assert_eq!(tiny.means.len(), 3);
    }

    #[test]
    fn rejects_bad_samples_and_params() {
        let params = MixtureParams::default().check().expect("valid");
        assert!(matches!(fit(&[], &params), Err(ModelError::EmptySample)));
        assert!(matches!(fit(&[1.0, f64::NAN], &params), Err(ModelError::NonFinite(_))));
        let zero = MixtureParams { n_components: 0, ..MixtureParams::default() };
        assert!(zero.check().is_err());
    }

    #[test]
    fn warm_start_continues_the_iterations_as_scikit_learn_does() {
        // A warm start on the same data recomputes the same priors and resumes with the
        // E-step: 40 iterations then 60 more are the 100 iterations of one fit, bit for bit.
        let x = three_modes(3000);
        let with = |max_iter| MixtureParams { max_iter, tol: 0.0, ..MixtureParams::default() }.check().expect("valid");
        let whole = fit(&x, &with(100)).expect("fit");
        let first = fit(&x, &with(40)).expect("fit");
        let resumed = fit_warm_start(&x, &first, &with(60)).expect("warm start");
        assert_eq!(resumed.n_iter, 60);
        assert_eq!(Mixture { n_iter: 100, ..resumed }, whole);
    }

    #[test]
    fn streaming_over_shards_models_them_all() {
        // Two shards with different modes: the streaming update keeps both, a warm start
        // drifts to the last one.
        let params = MixtureParams::default().check().expect("valid");
        let x = three_modes(6000);
        let (low, high): (Vec<f64>, Vec<f64>) = x.iter().partition(|v| **v < 10.0);
        let streamed = fit_streaming(&high, &fit(&low, &params).expect("fit"), &params).expect("streaming");
        let warm = fit_warm_start(&high, &fit(&low, &params).expect("fit"), &params).expect("warm start");
        let pooled = fit(&x, &params).expect("fit");
        let (s, w, p) =
            (streamed.mean_log_likelihood(&x), warm.mean_log_likelihood(&x), pooled.mean_log_likelihood(&x));
        assert!((s - p).abs() < 0.05 * p.abs(), "streaming {s}, pooled {p}");
        assert!(w < s - 1.0, "warm start {w} should model the first shard badly (streaming {s})");
        let bad = Mixture { covariances: vec![-1.0; 10], ..pooled };
        assert!(matches!(fit_streaming(&x, &bad, &params), Err(ModelError::InvalidParams(_))));
    }

    #[test]
    fn predict_proba_sums_to_one() {
        let x = three_modes(3000);
        let mix = fit(&x, &MixtureParams::default().check().expect("valid")).expect("fit");
        for v in [-10.0, 0.0, 7.0, 20.0, 1e6] {
            let p = mix.predict_proba(v);
            assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
    }
}

/// How one mixture is fitted over the samples of several shards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FitStrategy {
    /// The samples of every shard pooled into one fit: every shard counts equally.
    #[default]
    Pooled,
    /// Shard after shard, each fit starting from the previous one, as scikit-learn's
    /// `warm_start=True` (the original service's way): mostly reflects the last shards.
    WarmStart,
    /// Shard after shard, the previous posterior becoming the next prior (streaming
    /// variational update): every shard counts, one shard's sample in memory at a time.
    Streaming,
    /// Every row of every shard, not a sample: exact statistics on a fine grid
    /// ([`Histogram`]), merged over the shards, then one fit on the grid
    /// ([`fit_histogram`]).
    EveryRow,
}

/// One mixture from per-shard samples (in shard order), combined by `strategy`. Empty
/// samples (shards of nulls only) are skipped.
///
/// # Errors
/// [`ModelError::EmptySample`] when every sample is empty, or what the fit reports.
pub fn fit_parts(
    parts: &[Vec<f64>],
    strategy: FitStrategy,
    params: &ValidMixtureParams,
) -> Result<Mixture, ModelError> {
    let mut shards = parts.iter().filter(|s| !s.is_empty());
    match strategy {
        FitStrategy::Pooled => fit(&parts.concat(), params),
        FitStrategy::EveryRow => {
            let mut histogram = Histogram::new();
            for part in parts {
                if !part.is_empty() {
                    check_sample(part)?;
                }
                histogram.merge(&Histogram::of(part));
            }
            fit_histogram(&histogram, params)
        }
        FitStrategy::WarmStart | FitStrategy::Streaming => {
            let first = shards.next().ok_or(ModelError::EmptySample)?;
            let step = if strategy == FitStrategy::WarmStart { fit_warm_start } else { fit_streaming };
            shards.try_fold(fit(first, params)?, |previous, sample| step(sample, &previous, params))
        }
    }
}
