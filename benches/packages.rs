//! Opening Knomi encrypted packages: three RSA-OAEP decryptions (every parameter set, always),
//! AES and the JSON check, for 2048- and 3072-bit keys and both AES modes, on a 64 KiB request
//! (a 480x640 JPEG frame in base64 is about that). Each iteration opens a fresh package (a
//! package is single use); sealing is outside the measurement.
//!
//! `cargo bench --bench packages`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use facegate::api::iad::capture::generate_key;
use facegate::api::knomi::package::{seal, Mode, OaepHash, PackageOpener, PackageSettings};
use rsa::RsaPublicKey;

fn bench(c: &mut Criterion) {
    let request = format!(
        r#"{{"video":{{"workflow_data":{{"workflow":"foxtrot4","frames":[{{"data":"{}","timestamp":1}}]}}}}}}"#,
        "A".repeat(64 << 10)
    );
    let mut g = c.benchmark_group("knomi_package_open");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    for bits in [2048usize, 3072] {
        let key = generate_key(bits).expect("RSA key");
        let public = RsaPublicKey::from(&key);
        let opener = PackageOpener::new(
            key,
            PackageSettings {
                max_decryptions_per_s: 0,
                ..PackageSettings::default()
            },
        );
        for (name, mode) in [("cbc", Mode::Cbc), ("gcm", Mode::Gcm)] {
            g.bench_function(BenchmarkId::new(format!("rsa{bits}"), name), |b| {
                b.iter_batched(
                    || {
                        let e = seal(&public, request.as_bytes(), OaepHash::Sha256, mode)
                            .expect("seal");
                        serde_json::to_vec(&e).expect("package JSON")
                    },
                    |body| opener.open_blocking(&body).expect("opens"),
                    BatchSize::SmallInput,
                )
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
