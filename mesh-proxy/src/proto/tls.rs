//! Transport sockets: `envoy.transport_sockets.tls` (`UpstreamTlsContext`,
//! `DownstreamTlsContext`) and `envoy.transport_sockets.raw_buffer`.
//!
//! Certificates and validation contexts given inline or as files are converted; SDS
//! (`tls_certificate_sds_secret_configs`, `validation_context_sds_secret_config`,
//! `combined_validation_context`) is rejected until the SDS subscription exists (the model's
//! [`SecretSource::Sds`] is the seam for it).
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
    at, bool_must_be, bool_or, data_source, decode, is, required, string_matcher, unknown_type,
};
use super::{InvalidField, Within};
use crate::config::tls::{
    CertificateSource, CommonTls, DownstreamTls, DownstreamTransport, SanMatcher, SanType,
    SecretSource, TlsVersion, UpstreamTls, UpstreamTransport, Validation,
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
        tls_certificate_sds_secret_configs,
        tls_certificate_provider_instance,
        custom_tls_certificate_selector,
        tls_certificate_certificate_provider,
        tls_certificate_certificate_provider_instance,
        custom_handshaker,
        key_log
    );
    let (min_version, max_version) = match tls_params {
        None => (TlsVersion::V1_2, default_max),
        Some(p) => tls_params_versions(p, default_max).within("tls_params")?,
    };
    let certificates = tls_certificates
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            certificate(c)
                .map(SecretSource::Static)
                .within(&at("tls_certificates", i))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let validation = match validation_context_type {
        None => None,
        Some(V::ValidationContext(v)) => Some(SecretSource::Static(
            validation(v).within("validation_context")?,
        )),
        Some(V::ValidationContextSdsSecretConfig(_)) => {
            return Err(InvalidField::unsupported(
                "validation_context_sds_secret_config",
            ));
        }
        Some(V::CombinedValidationContext(_)) => {
            return Err(InvalidField::unsupported("combined_validation_context"));
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
        min_version,
        max_version,
    })
}

/// `TlsParameters`: only the protocol versions (TLS 1.2 and 1.3) are supported.
fn tls_params_versions(
    p: tls_pb::TlsParameters,
    default_max: TlsVersion,
) -> Result<(TlsVersion, TlsVersion), InvalidField> {
    use tls_pb::tls_parameters::TlsProtocol;
    let tls_pb::TlsParameters {
        tls_minimum_protocol_version,
        tls_maximum_protocol_version,
        cipher_suites,
        ecdh_curves,
        signature_algorithms,
        compliance_policies,
    } = p;
    unsupported_if_set!(
        cipher_suites,
        ecdh_curves,
        signature_algorithms,
        compliance_policies
    );
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
    Ok((min, max))
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
        match_subject_alt_names,
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
    let sans = match_typed_subject_alt_names
        .into_iter()
        .enumerate()
        .map(|(i, m)| san_matcher(m).within(&at("match_typed_subject_alt_names", i)))
        .collect::<Result<Vec<_>, _>>()?;
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
