//! Transport sockets: `envoy.transport_sockets.tls` (`UpstreamTlsContext`,
//! `DownstreamTlsContext`) and `envoy.transport_sockets.raw_buffer`.
//!
//! Certificates and validation contexts given inline, as files, or by SDS
//! (`tls_certificate_sds_secret_configs`, `validation_context_sds_secret_config`,
//! `combined_validation_context`), with an `sds_config` of `ads: {}` or an `api_config_source`
//! of type `GRPC` naming one Envoy gRPC cluster. SDS `Secret`s are converted by [`secret`].
//!
//! `tls_params.cipher_suites` takes OpenSSL/BoringSSL names. The TLS 1.2 ECDHE AEAD suites map
//! to rustls suites (`ECDHE-{ECDSA,RSA}-{AES128-GCM-SHA256,AES256-GCM-SHA384,CHACHA20-POLY1305}`,
//! also inside BoringSSL's `[A|B]` equal-preference groups). Suites BoringSSL knows that rustls
//! does not implement (static-RSA `AES128-GCM-SHA256`/`AES256-GCM-SHA384`, which Istio lists
//! last, the CBC `-SHA` suites, `PSK-`) are ignored, as are TLS 1.3 names (TLS 1.3 suites are
//! not configurable, as in BoringSSL); a name BoringSSL does not know is an error, as in Envoy.
//! `ecdh_curves` maps `X25519`, `P-256` and `P-384`.
//!
//! Accepted and ignored:
//! - `UpstreamTlsContext.max_session_keys`: the size of the client session cache (resumption
//!   is an optimisation; the handshake result is the same).
//! - `DownstreamTlsContext.disable_stateful_session_resumption`: likewise.

#![allow(deprecated)] // Envoy's deprecated fields are named (and checked) like the others.

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls_pb;

use super::common::{
    at, bool_must_be, bool_or, data_source, decode, is, non_empty, required, string_matcher,
    timeout_or, unknown_type,
};
use super::{InvalidField, Within};
use crate::config::bootstrap::AdsApi;
use crate::config::tls::{
    CertificateSource, CommonTls, DownstreamTls, DownstreamTransport, EcdhCurve, SanMatcher,
    SanType, SdsConfig, SdsSecret, SdsSource, SecretSource, SecretValue, Tls12Cipher, TlsVersion,
    UpstreamTls, UpstreamTransport, Validation, ValidationSource,
};

/// The transport socket names Envoy knows the TLS and plaintext sockets by (used when a
/// transport socket has no `typed_config`).
const TLS: &str = "envoy.transport_sockets.tls";
const RAW_BUFFER: &str = "envoy.transport_sockets.raw_buffer";

/// An upstream transport socket (clusters and `transport_socket_matches`).
pub(crate) fn upstream_transport(
    t: Option<core::TransportSocket>,
) -> Result<UpstreamTransport, InvalidField> {
    use core::transport_socket::ConfigType;
    let Some(core::TransportSocket { name, config_type }) = t else {
        return Ok(UpstreamTransport::Plain);
    };
    match config_type {
        Some(ConfigType::TypedConfig(a)) => {
            if is::<RawBuffer>(&a) {
                Ok(UpstreamTransport::Plain)
            } else if is::<tls_pb::UpstreamTlsContext>(&a) {
                let ctx = decode(&a).within("typed_config")?;
                Ok(UpstreamTransport::Tls(Box::new(
                    upstream_tls(ctx).within("typed_config")?,
                )))
            } else {
                Err(unknown_type(&a).within("typed_config"))
            }
        }
        None if name == RAW_BUFFER || name == "raw_buffer" => Ok(UpstreamTransport::Plain),
        None if name == TLS => Err(required("typed_config")),
        None => Err(InvalidField::invalid(
            "name",
            format!("unsupported transport socket {name:?}"),
        )),
    }
}

/// A downstream transport socket (filter chains).
pub(crate) fn downstream_transport(
    t: Option<core::TransportSocket>,
) -> Result<DownstreamTransport, InvalidField> {
    use core::transport_socket::ConfigType;
    let Some(core::TransportSocket { name, config_type }) = t else {
        return Ok(DownstreamTransport::Plain);
    };
    match config_type {
        Some(ConfigType::TypedConfig(a)) => {
            if is::<RawBuffer>(&a) {
                Ok(DownstreamTransport::Plain)
            } else if is::<tls_pb::DownstreamTlsContext>(&a) {
                let ctx = decode(&a).within("typed_config")?;
                Ok(DownstreamTransport::Tls(Box::new(
                    downstream_tls(ctx).within("typed_config")?,
                )))
            } else {
                Err(unknown_type(&a).within("typed_config"))
            }
        }
        None if name == RAW_BUFFER || name == "raw_buffer" => Ok(DownstreamTransport::Plain),
        None if name == TLS => Err(required("typed_config")),
        None => Err(InvalidField::invalid(
            "name",
            format!("unsupported transport socket {name:?}"),
        )),
    }
}

/// `UpstreamTlsContext`. `auto_sni` and `auto_san_validation` come from the cluster's HTTP
/// protocol options and are set by the cluster conversion.
pub(crate) fn upstream_tls(c: tls_pb::UpstreamTlsContext) -> Result<UpstreamTls, InvalidField> {
    let tls_pb::UpstreamTlsContext {
        common_tls_context,
        sni,
        auto_host_sni,
        auto_sni_san_validation,
        allow_renegotiation,
        max_session_keys: _,
        enforce_rsa_key_usage,
    } = c;
    unsupported_if_set!(
        auto_host_sni,
        auto_sni_san_validation,
        allow_renegotiation,
        enforce_rsa_key_usage
    );
    if sni.len() > 255 {
        return Err(InvalidField::invalid(
            "sni",
            "value length must be at most 255 bytes",
        ));
    }
    let common = common_tls(common_tls_context.unwrap_or_default(), TlsVersion::V1_2)
        .within("common_tls_context")?;
    Ok(UpstreamTls {
        common,
        sni,
        auto_sni: false,
        auto_san_validation: false,
    })
}

/// `DownstreamTlsContext`.
pub(crate) fn downstream_tls(
    c: tls_pb::DownstreamTlsContext,
) -> Result<DownstreamTls, InvalidField> {
    let tls_pb::DownstreamTlsContext {
        common_tls_context,
        require_client_certificate,
        require_sni,
        disable_stateful_session_resumption: _,
        session_timeout,
        ocsp_staple_policy,
        full_scan_certs_on_sni_mismatch,
        prefer_client_ciphers,
        session_ticket_keys_type,
    } = c;
    bool_must_be(require_sni, false, "require_sni")?;
    unsupported_if_set!(
        session_timeout,
        ocsp_staple_policy,
        full_scan_certs_on_sni_mismatch,
        prefer_client_ciphers,
        session_ticket_keys_type
    );
    let common = common_tls(common_tls_context.unwrap_or_default(), TlsVersion::V1_3)
        .within("common_tls_context")?;
    if common.certificates.is_empty() {
        return Err(InvalidField::invalid(
            "common_tls_context",
            "No TLS certificates found for server context",
        ));
    }
    let require_client_certificate = bool_or(require_client_certificate, false);
    if require_client_certificate && common.validation.is_none() {
        return Err(InvalidField::invalid(
            "require_client_certificate",
            "a client certificate is required but no validation context (trusted CA) is set",
        ));
    }
    Ok(DownstreamTls {
        common,
        require_client_certificate,
    })
}

/// `CommonTlsContext`, with the side's default maximum version (clients 1.2, servers 1.3; the
/// minimum is 1.2 on both sides).
fn common_tls(
    c: tls_pb::CommonTlsContext,
    default_max: TlsVersion,
) -> Result<CommonTls, InvalidField> {
    use tls_pb::common_tls_context::ValidationContextType as V;
    let tls_pb::CommonTlsContext {
        tls_params,
        tls_certificates,
        tls_certificate_sds_secret_configs,
        tls_certificate_provider_instance,
        custom_tls_certificate_selector,
        tls_certificate_certificate_provider,
        tls_certificate_certificate_provider_instance,
        alpn_protocols,
        custom_handshaker,
        key_log,
        validation_context_type,
    } = c;
    unsupported_if_set!(
        tls_certificate_provider_instance,
        custom_tls_certificate_selector,
        tls_certificate_certificate_provider,
        tls_certificate_certificate_provider_instance,
        custom_handshaker,
        key_log
    );
    let params = match tls_params {
        None => Params {
            min: TlsVersion::V1_2,
            max: default_max,
            cipher_suites: None,
            ecdh_curves: None,
        },
        Some(p) => params(p, default_max).within("tls_params")?,
    };
    let mut certificates = tls_certificates
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            certificate(c)
                .map(SecretSource::Static)
                .within(&at("tls_certificates", i))
        })
        .collect::<Result<Vec<_>, _>>()?;
    for (i, c) in tls_certificate_sds_secret_configs.into_iter().enumerate() {
        certificates.push(SecretSource::Sds(
            sds_secret(c).within(&at("tls_certificate_sds_secret_configs", i))?,
        ));
    }
    let validation = match validation_context_type {
        None => None,
        Some(V::ValidationContext(v)) => Some(ValidationSource::Static(
            validation(v).within("validation_context")?,
        )),
        Some(V::ValidationContextSdsSecretConfig(s)) => Some(ValidationSource::Sds(
            sds_secret(s).within("validation_context_sds_secret_config")?,
        )),
        Some(V::CombinedValidationContext(c)) => {
            Some(combined(c).within("combined_validation_context")?)
        }
        Some(V::ValidationContextCertificateProvider(_)) => {
            return Err(InvalidField::unsupported(
                "validation_context_certificate_provider",
            ));
        }
        Some(V::ValidationContextCertificateProviderInstance(_)) => {
            return Err(InvalidField::unsupported(
                "validation_context_certificate_provider_instance",
            ));
        }
    };
    Ok(CommonTls {
        certificates,
        validation,
        alpn: alpn_protocols,
        min_version: params.min,
        max_version: params.max,
        cipher_suites: params.cipher_suites,
        ecdh_curves: params.ecdh_curves,
    })
}

/// `CombinedCertificateValidationContext`.
fn combined(
    c: tls_pb::common_tls_context::CombinedCertificateValidationContext,
) -> Result<ValidationSource, InvalidField> {
    let tls_pb::common_tls_context::CombinedCertificateValidationContext {
        default_validation_context,
        validation_context_sds_secret_config,
        validation_context_certificate_provider,
        validation_context_certificate_provider_instance,
    } = c;
    unsupported_if_set!(
        validation_context_certificate_provider,
        validation_context_certificate_provider_instance
    );
    let default = validation(
        default_validation_context.ok_or_else(|| required("default_validation_context"))?,
    )
    .within("default_validation_context")?;
    let sds = sds_secret(
        validation_context_sds_secret_config
            .ok_or_else(|| required("validation_context_sds_secret_config"))?,
    )
    .within("validation_context_sds_secret_config")?;
    Ok(ValidationSource::Combined { default, sds })
}

/// `SdsSecretConfig`: a secret by name over SDS.
fn sds_secret(c: tls_pb::SdsSecretConfig) -> Result<SdsSecret, InvalidField> {
    let tls_pb::SdsSecretConfig { name, sds_config } = c;
    let name = non_empty(name, "name")?;
    let Some(config) = sds_config else {
        return Err(InvalidField::invalid(
            "sds_config",
            "secrets from static_resources.secrets are not supported: give an sds_config",
        ));
    };
    Ok(SdsSecret {
        name,
        config: sds_config_source(config).within("sds_config")?,
    })
}

/// The `ConfigSource` of SDS secrets: `ads: {}`, or a `GRPC` `api_config_source` naming one
/// Envoy gRPC cluster.
fn sds_config_source(c: core::ConfigSource) -> Result<SdsConfig, InvalidField> {
    use core::config_source::ConfigSourceSpecifier as S;
    let core::ConfigSource {
        authorities,
        initial_fetch_timeout,
        resource_api_version,
        config_source_specifier,
    } = c;
    unsupported_if_set!(authorities);
    if core::ApiVersion::try_from(resource_api_version) != Ok(core::ApiVersion::V3) {
        return Err(InvalidField::invalid(
            "resource_api_version",
            "only the V3 xDS resource version is supported",
        ));
    }
    let source = match config_source_specifier {
        Some(S::Ads(core::AggregatedConfigSource {})) => SdsSource::Ads,
        Some(S::ApiConfigSource(a)) => {
            let ads = super::bootstrap::ads(a).within("api_config_source")?;
            if ads.api != AdsApi::Sotw {
                return Err(InvalidField::invalid(
                    "api_config_source.api_type",
                    "SDS over DELTA_GRPC is not implemented; use GRPC",
                ));
            }
            SdsSource::Grpc {
                cluster: ads.cluster,
                api: ads.api,
                set_node_on_first_message_only: ads.set_node_on_first_message_only,
            }
        }
        Some(S::Path(_)) => return Err(InvalidField::unsupported("path")),
        Some(S::PathConfigSource(_)) => {
            return Err(InvalidField::unsupported("path_config_source"));
        }
        Some(S::Self_(_)) => return Err(InvalidField::unsupported("self")),
        None => return Err(required("config_source_specifier")),
    };
    Ok(SdsConfig {
        source,
        initial_fetch_timeout: timeout_or(
            initial_fetch_timeout,
            Some(std::time::Duration::from_secs(15)),
            "initial_fetch_timeout",
        )?,
    })
}

/// An SDS `Secret`: its name and content (a certificate or a validation context).
pub fn secret(s: tls_pb::Secret) -> Result<(String, SecretValue), InvalidField> {
    use tls_pb::secret::Type;
    let tls_pb::Secret { name, r#type } = s;
    let value = match r#type {
        Some(Type::TlsCertificate(c)) => {
            SecretValue::Certificate(certificate(c).within("tls_certificate")?)
        }
        Some(Type::ValidationContext(v)) => {
            SecretValue::Validation(validation(v).within("validation_context")?)
        }
        Some(Type::SessionTicketKeys(_)) => {
            return Err(InvalidField::unsupported("session_ticket_keys"));
        }
        Some(Type::GenericSecret(_)) => return Err(InvalidField::unsupported("generic_secret")),
        None => return Err(required("type")),
    };
    Ok((name, value))
}

/// `TlsParameters`, converted.
struct Params {
    min: TlsVersion,
    max: TlsVersion,
    cipher_suites: Option<Vec<Tls12Cipher>>,
    ecdh_curves: Option<Vec<EcdhCurve>>,
}

/// `TlsParameters`: protocol versions (TLS 1.2 and 1.3), cipher suites and ECDH curves.
fn params(p: tls_pb::TlsParameters, default_max: TlsVersion) -> Result<Params, InvalidField> {
    use tls_pb::tls_parameters::TlsProtocol;
    let tls_pb::TlsParameters {
        tls_minimum_protocol_version,
        tls_maximum_protocol_version,
        cipher_suites,
        ecdh_curves,
        signature_algorithms,
        compliance_policies,
    } = p;
    unsupported_if_set!(signature_algorithms, compliance_policies);
    let version = |v: i32, default: TlsVersion, field: &str| match TlsProtocol::try_from(v) {
        Ok(TlsProtocol::TlsAuto) => Ok(default),
        Ok(TlsProtocol::TlSv12) => Ok(TlsVersion::V1_2),
        Ok(TlsProtocol::TlSv13) => Ok(TlsVersion::V1_3),
        Ok(TlsProtocol::TlSv10 | TlsProtocol::TlSv11) => Err(InvalidField::invalid(
            field,
            "TLS 1.0 and 1.1 are not supported by mesh-proxy",
        )),
        Err(_) => Err(super::common::bad_enum(field)),
    };
    let min = version(
        tls_minimum_protocol_version,
        TlsVersion::V1_2,
        "tls_minimum_protocol_version",
    )?;
    let max = version(
        tls_maximum_protocol_version,
        default_max,
        "tls_maximum_protocol_version",
    )?;
    if min > max {
        return Err(InvalidField::invalid(
            "tls_minimum_protocol_version",
            "the minimum TLS version is above the maximum",
        ));
    }
    let cipher_suites = if cipher_suites.is_empty() {
        None
    } else {
        let mut out = Vec::new();
        for (i, name) in cipher_suites.iter().enumerate() {
            // BoringSSL's equal-preference groups, `[A|B]`, keep their order here.
            let inner = name
                .strip_prefix('[')
                .and_then(|n| n.strip_suffix(']'))
                .unwrap_or(name);
            for n in inner.split('|') {
                match cipher(n.trim()) {
                    Ok(Some(c)) if !out.contains(&c) => out.push(c),
                    Ok(_) => {}
                    Err(e) => return Err(InvalidField::invalid(at("cipher_suites", i), e)),
                }
            }
        }
        Some(out)
    };
    let ecdh_curves = if ecdh_curves.is_empty() {
        None
    } else {
        let mut out = Vec::new();
        for (i, name) in ecdh_curves.iter().enumerate() {
            let c = match name.as_str() {
                "X25519" => EcdhCurve::X25519,
                "P-256" | "prime256v1" | "secp256r1" => EcdhCurve::P256,
                "P-384" | "secp384r1" => EcdhCurve::P384,
                other => {
                    return Err(InvalidField::invalid(
                        at("ecdh_curves", i),
                        format!("Failed to initialize ECDH curves {other}"),
                    ));
                }
            };
            if !out.contains(&c) {
                out.push(c);
            }
        }
        Some(out)
    };
    Ok(Params {
        min,
        max,
        cipher_suites,
        ecdh_curves,
    })
}

/// A cipher suite by its OpenSSL name: `Some` when rustls implements it, `None` when it is a
/// suite BoringSSL knows and rustls does not (ignored), an error when nobody knows it.
fn cipher(name: &str) -> Result<Option<Tls12Cipher>, String> {
    Ok(Some(match name {
        "ECDHE-ECDSA-AES128-GCM-SHA256" => Tls12Cipher::EcdheEcdsaAes128Gcm,
        "ECDHE-ECDSA-AES256-GCM-SHA384" => Tls12Cipher::EcdheEcdsaAes256Gcm,
        "ECDHE-ECDSA-CHACHA20-POLY1305" => Tls12Cipher::EcdheEcdsaChacha20,
        "ECDHE-RSA-AES128-GCM-SHA256" => Tls12Cipher::EcdheRsaAes128Gcm,
        "ECDHE-RSA-AES256-GCM-SHA384" => Tls12Cipher::EcdheRsaAes256Gcm,
        "ECDHE-RSA-CHACHA20-POLY1305" => Tls12Cipher::EcdheRsaChacha20,
        // Known to BoringSSL, not implemented by rustls (or not configurable: TLS 1.3).
        "AES128-GCM-SHA256"
        | "AES256-GCM-SHA384"
        | "AES128-SHA"
        | "AES256-SHA"
        | "DES-CBC3-SHA"
        | "ECDHE-ECDSA-AES128-SHA"
        | "ECDHE-ECDSA-AES256-SHA"
        | "ECDHE-RSA-AES128-SHA"
        | "ECDHE-RSA-AES256-SHA"
        | "ECDHE-PSK-AES128-CBC-SHA"
        | "ECDHE-PSK-AES256-CBC-SHA"
        | "ECDHE-PSK-CHACHA20-POLY1305"
        | "PSK-AES128-CBC-SHA"
        | "PSK-AES256-CBC-SHA"
        | "TLS_AES_128_GCM_SHA256"
        | "TLS_AES_256_GCM_SHA384"
        | "TLS_CHACHA20_POLY1305_SHA256" => return Ok(None),
        other => return Err(format!("Failed to initialize cipher suites {other}")),
    }))
}

/// `TlsCertificate` with a chain and a key.
fn certificate(c: tls_pb::TlsCertificate) -> Result<CertificateSource, InvalidField> {
    let tls_pb::TlsCertificate {
        certificate_chain,
        private_key,
        pkcs12,
        watched_directory,
        private_key_provider,
        password,
        ocsp_staple,
        signed_certificate_timestamp,
        tls_params,
    } = c;
    unsupported_if_set!(
        pkcs12,
        watched_directory,
        private_key_provider,
        password,
        ocsp_staple,
        signed_certificate_timestamp,
        tls_params
    );
    let chain = certificate_chain.ok_or_else(|| required("certificate_chain"))?;
    let key = private_key.ok_or_else(|| required("private_key"))?;
    Ok(CertificateSource {
        chain: data_source(chain).within("certificate_chain")?,
        key: data_source(key).within("private_key")?,
    })
}

/// `CertificateValidationContext`.
fn validation(v: tls_pb::CertificateValidationContext) -> Result<Validation, InvalidField> {
    use tls_pb::certificate_validation_context::TrustChainVerification;
    let tls_pb::CertificateValidationContext {
        trusted_ca,
        ca_certificate_provider_instance,
        system_root_certs,
        watched_directory,
        verify_certificate_spki,
        verify_certificate_hash,
        match_typed_subject_alt_names,
        match_subject_alt_names,
        require_signed_certificate_timestamp,
        crl,
        allow_expired_certificate,
        trust_chain_verification,
        custom_validator_config,
        only_verify_leaf_cert_crl,
        max_verify_depth,
        suppress_client_ca_list,
    } = v;
    unsupported_if_set!(
        ca_certificate_provider_instance,
        system_root_certs,
        watched_directory,
        verify_certificate_spki,
        verify_certificate_hash,
        require_signed_certificate_timestamp,
        allow_expired_certificate,
        custom_validator_config,
        only_verify_leaf_cert_crl,
        max_verify_depth,
        suppress_client_ca_list
    );
    let accept_untrusted = match TrustChainVerification::try_from(trust_chain_verification) {
        Ok(TrustChainVerification::VerifyTrustChain) => false,
        Ok(TrustChainVerification::AcceptUntrusted) => true,
        Err(_) => return Err(super::common::bad_enum("trust_chain_verification")),
    };
    let mut sans = match_typed_subject_alt_names
        .into_iter()
        .enumerate()
        .map(|(i, m)| san_matcher(m).within(&at("match_typed_subject_alt_names", i)))
        .collect::<Result<Vec<_>, _>>()?;
    // The deprecated untyped matchers (what istiod sends) match a SAN of any of the four
    // kinds, as Envoy expands them.
    for (i, m) in match_subject_alt_names.into_iter().enumerate() {
        let matcher = string_matcher(m).within(&at("match_subject_alt_names", i))?;
        for kind in [SanType::Dns, SanType::Uri, SanType::Email, SanType::Ip] {
            sans.push(SanMatcher {
                kind,
                matcher: matcher.clone(),
            });
        }
    }
    Ok(Validation {
        trusted_ca: trusted_ca
            .map(data_source)
            .transpose()
            .within("trusted_ca")?,
        sans,
        crl: crl.map(data_source).transpose().within("crl")?,
        accept_untrusted,
    })
}

/// `SubjectAltNameMatcher`.
fn san_matcher(m: tls_pb::SubjectAltNameMatcher) -> Result<SanMatcher, InvalidField> {
    use tls_pb::subject_alt_name_matcher::SanType as S;
    let tls_pb::SubjectAltNameMatcher {
        san_type,
        matcher,
        oid,
    } = m;
    unsupported_if_set!(oid);
    let kind = match S::try_from(san_type) {
        Ok(S::Dns) => SanType::Dns,
        Ok(S::Uri) => SanType::Uri,
        Ok(S::IpAddress) => SanType::Ip,
        Ok(S::Email) => SanType::Email,
        Ok(S::OtherName) => return Err(InvalidField::unsupported("san_type")),
        Ok(S::Unspecified) => {
            return Err(InvalidField::invalid(
                "san_type",
                "value must not be in list [SAN_TYPE_UNSPECIFIED]",
            ));
        }
        Err(_) => return Err(super::common::bad_enum("san_type")),
    };
    let matcher = matcher.ok_or_else(|| required("matcher"))?;
    Ok(SanMatcher {
        kind,
        matcher: string_matcher(matcher).within("matcher")?,
    })
}
