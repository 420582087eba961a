//! CSR signing throughput of the CA, end to end (PEM parse, key-type check, proof of possession
//! by verifying the CSR's signature, certificate build and ECDSA P-256 signature, PEM encode),
//! next to the raw P-256 sign and verify rates of the crypto library on the same machine (the
//! ceiling: one signing needs one verify and one sign). Single-threaded, so the rates are per
//! core. Run with `cargo bench -p mesh-benches --bench ca`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mesh_identity::ca::{CaConfig, CertificateAuthority};
use mesh_identity::spiffe::{SpiffeId, TrustDomain};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};

fn bench(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("mesh-bench-ca-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let td = TrustDomain::new("cluster.local").unwrap();
    let ca = CertificateAuthority::self_signed(&dir, CaConfig::new(td.clone())).unwrap();
    let id = SpiffeId::istio(td, "shop", "web").unwrap();
    let csr = mesh_test_support::identity::csr();

    let mut g = c.benchmark_group("ca");
    g.throughput(Throughput::Elements(1))
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    g.bench_function("sign_csr", |b| {
        b.iter(|| black_box(ca.sign_csr(&csr, &id, None).unwrap()))
    });

    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let msg = [7u8; 300];
    g.bench_function("p256_sign", |b| {
        b.iter(|| black_box(pair.sign(&rng, &msg).unwrap()))
    });
    let sig = pair.sign(&rng, &msg).unwrap();
    let public =
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, pair.public_key().as_ref().to_vec());
    g.bench_function("p256_verify", |b| {
        b.iter(|| public.verify(&msg, sig.as_ref()).unwrap())
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
