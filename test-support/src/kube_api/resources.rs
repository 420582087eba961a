//! The resource types the fake serves, and the discovery documents built from them.

use serde_json::{Value, json};

/// One served resource type (a group/version/plural).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceType {
    /// API group, `""` for core.
    pub group: &'static str,
    /// Version, e.g. `v1`.
    pub version: &'static str,
    /// Plural name used in paths.
    pub plural: &'static str,
    /// Singular name.
    pub singular: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Short names (`svc`).
    pub short_names: &'static [&'static str],
}

impl ResourceType {
    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The storage key shared by every served version of the same group and plural.
    pub(crate) fn storage(&self) -> (&'static str, &'static str) {
        (self.group, self.plural)
    }
}

const fn rt(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
) -> ResourceType {
    ResourceType {
        group,
        version,
        plural,
        singular,
        kind,
        namespaced,
        short_names,
    }
}

const ISTIO_NET: [(&str, &str, &str, &[&str]); 7] = [
    (
        "virtualservices",
        "virtualservice",
        "VirtualService",
        &["vs"],
    ),
    (
        "destinationrules",
        "destinationrule",
        "DestinationRule",
        &["dr"],
    ),
    ("gateways", "gateway", "Gateway", &["gw"]),
    ("serviceentries", "serviceentry", "ServiceEntry", &["se"]),
    ("workloadentries", "workloadentry", "WorkloadEntry", &["we"]),
    ("workloadgroups", "workloadgroup", "WorkloadGroup", &["wg"]),
    ("sidecars", "sidecar", "Sidecar", &[]),
];

const ISTIO_SEC: [(&str, &str, &str, &[&str]); 3] = [
    (
        "peerauthentications",
        "peerauthentication",
        "PeerAuthentication",
        &["pa"],
    ),
    (
        "authorizationpolicies",
        "authorizationpolicy",
        "AuthorizationPolicy",
        &["ap"],
    ),
    (
        "requestauthentications",
        "requestauthentication",
        "RequestAuthentication",
        &["ra"],
    ),
];

/// Every built-in resource type.
pub(crate) fn builtin() -> Vec<ResourceType> {
    let mut all = vec![
        rt(
            "",
            "v1",
            "namespaces",
            "namespace",
            "Namespace",
            false,
            &["ns"],
        ),
        rt("", "v1", "nodes", "node", "Node", false, &["no"]),
        rt("", "v1", "pods", "pod", "Pod", true, &["po"]),
        rt("", "v1", "services", "service", "Service", true, &["svc"]),
        rt("", "v1", "secrets", "secret", "Secret", true, &[]),
        rt(
            "",
            "v1",
            "configmaps",
            "configmap",
            "ConfigMap",
            true,
            &["cm"],
        ),
        rt(
            "discovery.k8s.io",
            "v1",
            "endpointslices",
            "endpointslice",
            "EndpointSlice",
            true,
            &[],
        ),
    ];
    for version in ["v1", "v1beta1", "v1alpha3"] {
        for (plural, singular, kind, short) in ISTIO_NET {
            all.push(rt(
                "networking.istio.io",
                version,
                plural,
                singular,
                kind,
                true,
                short,
            ));
        }
    }
    for version in ["v1", "v1beta1"] {
        for (plural, singular, kind, short) in ISTIO_SEC {
            all.push(rt(
                "security.istio.io",
                version,
                plural,
                singular,
                kind,
                true,
                short,
            ));
        }
    }
    all
}

/// `/api`.
pub(crate) fn api_versions(addr: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": addr}]
    })
}

/// `/apis`: groups in first-seen order, the first listed version preferred.
pub(crate) fn api_group_list(types: &[ResourceType]) -> Value {
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for t in types.iter().filter(|t| !t.group.is_empty()) {
        match groups.iter_mut().find(|(g, _)| *g == t.group) {
            Some((_, vs)) if !vs.contains(&t.version) => vs.push(t.version),
            Some(_) => {}
            None => groups.push((t.group, vec![t.version])),
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(g, vs)| {
            let versions: Vec<Value> = vs
                .iter()
                .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                .collect();
            json!({"name": g, "versions": versions, "preferredVersion": versions[0].clone()})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/api/v1` or `/apis/<group>/<version>`, `None` if nothing is served there.
pub(crate) fn api_resource_list(
    types: &[ResourceType],
    group: &str,
    version: &str,
) -> Option<Value> {
    let resources: Vec<Value> = types
        .iter()
        .filter(|t| t.group == group && t.version == version)
        .map(|t| {
            let mut r = json!({
                "name": t.plural,
                "singularName": t.singular,
                "namespaced": t.namespaced,
                "kind": t.kind,
                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
            });
            if !t.short_names.is_empty() {
                r["shortNames"] = json!(t.short_names);
            }
            r
        })
        .collect();
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}
