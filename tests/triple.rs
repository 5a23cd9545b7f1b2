//! The third PAD network in the engine: with `load_celeba` every face gets the CelebA-Spoof
//! network's output beside the pair's, the `minifasnet-triple` pipeline (mean of the three
//! live log-odds) judges the fixtures, and the IDLive dialect serves and lists it only when it
//! is loaded.

mod common;

use common::http::*;
use facegate::api::idlive::UNSUPPORTED_PIPELINE;
use facegate::engine::calibration::raw_score;
use facegate::engine::pipeline::{PadNetwork, Pipeline};
use facegate::engine::{AnalyzeOptions, Calibration};
use hyper::StatusCode;

fn analyse(name: &str) -> facegate::engine::Analysis {
    engine_celeba()
        .analyze(&fixture_bytes(name), &AnalyzeOptions::default())
        .unwrap()
}

#[test]
fn the_triple_pipeline_is_the_mean_of_three_log_odds() {
    let e = engine_celeba();
    assert_eq!(e.pipelines(), Pipeline::ALL);
    for (name, live) in [
        ("image_T1.jpg", true),
        ("image_F1.jpg", false),
        ("image_F2.jpg", false),
    ] {
        let a = analyse(name);
        let l = a.liveness.as_ref().unwrap();
        let names: Vec<&str> = l.networks.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(
            names,
            PadNetwork::ALL.map(PadNetwork::name),
            "{name}: every network ran"
        );
        let c = &l.networks[2];
        assert_eq!(c.softmax[2], 0.0, "two classes: no replay slot");
        assert!((c.softmax[0] + c.softmax[1] - 1.0).abs() < 1e-5);
        let v = e
            .decider()
            .verdict(&l.networks, Pipeline::Triple, Calibration::Regular)
            .unwrap();
        let want = l
            .networks
            .iter()
            .map(|o| raw_score(o.softmax[1]))
            .sum::<f32>()
            / 3.0;
        assert!(
            (v.score - want).abs() < 1e-5,
            "{name}: {} vs {want}",
            v.score
        );
        assert_eq!(v.is_live, live, "{name}: {v:?}");
        // The dual pipeline's verdict is what it always was.
        let dual = e
            .decider()
            .verdict(&l.networks, Pipeline::Dual, Calibration::Regular)
            .unwrap();
        assert_eq!(dual.score, l.score, "{name}");
    }
    // Without the network, asking for the triple is the client's error, not a fault.
    let plain = engine();
    assert!(!plain.pipelines().contains(&Pipeline::Triple));
    let a = plain
        .analyze(&fixture_bytes("image_T1.jpg"), &AnalyzeOptions::default())
        .unwrap();
    let err = plain
        .decider()
        .verdict(
            &a.liveness.unwrap().networks,
            Pipeline::Triple,
            Calibration::Regular,
        )
        .unwrap_err();
    assert_eq!(err.kind(), "invalid_argument", "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idlive_serves_and_lists_the_triple_only_when_loaded() {
    let t1 = fixture_bytes("image_T1.jpg");
    let with = start_with_engine(config(|_| {}), Default::default(), engine_celeba()).await;
    let v = get(&with, "/idlive/api_version").await.json();
    assert_eq!(
        v["availablePipelines"],
        serde_json::json!([
            "minifasnet-dual",
            "minifasnet-v2",
            "minifasnet-v1se",
            "minifasnet-triple"
        ])
    );
    let a = post_multipart(
        &with,
        "/idlive/check_liveness?pipeline=minifasnet-triple",
        &[file("image", "t1.jpg", &t1)],
        &[],
    )
    .await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    assert!(
        a.json()["probability"].as_f64().unwrap() > 0.5,
        "{}",
        a.json()
    );
    with.shutdown();

    let without = start(config(|_| {}), Default::default()).await;
    let v = get(&without, "/idlive/api_version").await.json();
    assert_eq!(v["availablePipelines"].as_array().unwrap().len(), 3, "{v}");
    let a = post_multipart(
        &without,
        "/idlive/check_liveness?pipeline=minifasnet-triple",
        &[file("image", "t1.jpg", &t1)],
        &[],
    )
    .await;
    // As for an unknown name: the reference's 200 with the error and a null code.
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.json(),
        serde_json::json!({"error": UNSUPPORTED_PIPELINE, "error_code": null})
    );
    without.shutdown();
}
