//! Parity with scikit-learn's `BayesianGaussianMixture` on the fixtures made by
//! `model/fixtures/make_fixtures.py` (versions pinned in `model/fixtures/requirements.txt`).

use serde::Deserialize;
use shardflow_model::{Mixture, MixtureParams, fit, fit_from_labels};

#[derive(Deserialize)]
struct Fixtures {
    sklearn_version: String,
    datasets: Vec<Dataset>,
}

#[derive(Deserialize)]
struct Dataset {
    name: String,
    x: Vec<f64>,
    held_out: Vec<f64>,
    error: Option<String>,
    labels: Option<Vec<usize>>,
    weights: Option<Vec<f64>>,
    means: Option<Vec<f64>>,
    covariances: Option<Vec<f64>>,
    weight_concentration_a: Option<Vec<f64>>,
    weight_concentration_b: Option<Vec<f64>>,
    mean_precision: Option<Vec<f64>>,
    degrees_of_freedom: Option<Vec<f64>>,
    lower_bound: Option<f64>,
    n_iter: Option<usize>,
    held_out_loglik: Option<f64>,
}

fn fixtures() -> Fixtures {
    serde_json::from_str(include_str!("../fixtures/sklearn_bgm.json")).expect("fixtures parse")
}

fn params() -> shardflow_model::ValidMixtureParams {
    MixtureParams::default().check().expect("defaults are valid")
}

fn close(what: &str, ours: &[f64], theirs: &[f64], rel: f64) {
    assert_eq!(ours.len(), theirs.len(), "{what}: lengths");
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        let scale = a.abs().max(b.abs());
        assert!(
            (a - b).abs() <= rel * scale,
            "{what}[{i}]: ours {a:e}, scikit-learn {b:e} (rel {:e})",
            (a - b).abs() / scale
        );
    }
}

fn compare(name: &str, ours: &Mixture, theirs: &Dataset) {
    let get = |v: &Option<Vec<f64>>| v.clone().expect("fixture field");
    close(&format!("{name} weights"), &ours.weights, &get(&theirs.weights), 1e-9);
    close(&format!("{name} means"), &ours.means, &get(&theirs.means), 1e-9);
    close(&format!("{name} covariances"), &ours.covariances, &get(&theirs.covariances), 1e-9);
    close(
        &format!("{name} weight_concentration_a"),
        &ours.weight_concentration_a,
        &get(&theirs.weight_concentration_a),
        1e-9,
    );
    close(
        &format!("{name} weight_concentration_b"),
        &ours.weight_concentration_b,
        &get(&theirs.weight_concentration_b),
        1e-9,
    );
    close(&format!("{name} mean_precision"), &ours.mean_precision, &get(&theirs.mean_precision), 1e-9);
    close(&format!("{name} degrees_of_freedom"), &ours.degrees_of_freedom, &get(&theirs.degrees_of_freedom), 1e-9);
    close(&format!("{name} lower_bound"), &[ours.lower_bound], &[theirs.lower_bound.expect("lower bound")], 1e-9);
    assert_eq!(Some(ours.n_iter), theirs.n_iter, "{name}: iterations");
}

#[test]
fn started_from_scikit_learns_labels_the_fit_matches_to_1e_9() {
    let f = fixtures();
    let mut compared = 0;
    for d in f.datasets.iter().filter(|d| d.labels.is_some()) {
        let labels = d.labels.as_ref().expect("labels");
        let ours = fit_from_labels(&d.x, labels, &params()).expect("fit");
        compare(&d.name, &ours, d);
        compared += 1;
    }
    assert!(compared >= 4, "fixtures of scikit-learn {} hold {compared} fits", f.sklearn_version);
}

#[test]
fn with_its_own_start_the_held_out_likelihood_is_within_1_percent() {
    for d in fixtures().datasets.iter().filter(|d| d.held_out_loglik.is_some()) {
        let ours = fit(&d.x, &params()).expect("fit").mean_log_likelihood(&d.held_out);
        let theirs = d.held_out_loglik.expect("loglik");
        assert!(
            (ours - theirs).abs() <= 0.01 * theirs.abs(),
            "{}: held-out log-likelihood ours {ours}, scikit-learn {theirs}",
            d.name
        );
    }
}

#[test]
fn fewer_rows_than_components_fits_one_component_per_row_where_scikit_learn_refuses() {
    let d = fixtures().datasets.into_iter().find(|d| d.name == "fewer_rows_than_components").expect("fixture");
    assert!(d.error.as_deref().is_some_and(|e| e.contains("n_samples >= n_components")), "{:?}", d.error);
    let ours = fit(&d.x, &params()).expect("fit");
    assert_eq!(ours.weights.len(), d.x.len());
    assert!((ours.weights.iter().sum::<f64>() - 1.0).abs() < 1e-12);
}
