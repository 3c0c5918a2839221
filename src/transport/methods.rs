//! The API's methods by their `service/Method` names: the one table that
//! the Connect layer (which methods exist, which take the GET form) and the
//! metrics (which calls are counted, under which label) share.

/// One method of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiMethod {
    /// `gitpod.v1.PrebuildService/GetPrebuild`.
    pub name: &'static str,
    /// Whether the Connect GET form serves it (idempotency level
    /// NO_SIDE_EFFECTS in the proto).
    pub allows_get: bool,
}

const fn method(name: &'static str, allows_get: bool) -> ApiMethod {
    ApiMethod { name, allows_get }
}

/// Every method, in a fixed order (the metrics index their hot series by
/// position).
pub const METHODS: &[ApiMethod] = &[
    method("gitpod.v1.PrebuildService/CreatePrebuild", false),
    method("gitpod.v1.PrebuildService/ListPrebuilds", true),
    method("gitpod.v1.PrebuildService/GetPrebuild", true),
    method("gitpod.v1.PrebuildService/CancelPrebuild", false),
    method("gitpod.v1.PrebuildService/DeletePrebuild", false),
    method("gitpod.v1.PrebuildService/CreatePrebuildLogsToken", false),
    method("gitpod.v1.PrebuildService/CreateWarmPool", false),
    method("gitpod.v1.PrebuildService/GetWarmPool", true),
    method("gitpod.v1.PrebuildService/ListWarmPools", true),
    method("gitpod.v1.PrebuildService/UpdateWarmPool", false),
    method("gitpod.v1.PrebuildService/DeleteWarmPool", false),
    method("prebuildd.v1.WarmPoolInstanceService/ClaimInstance", false),
    method("prebuildd.v1.PrebuildSourceService/ListPrebuildSources", true),
    method("prebuildd.v1.CatalogService/ListProjects", true),
    method("prebuildd.v1.CatalogService/ListEnvironmentClasses", true),
    method("prebuildd.v1.CatalogService/ListRunners", true),
];

/// The method of that name, with its position in [`METHODS`].
pub fn find(name: &str) -> Option<(usize, &'static ApiMethod)> {
    METHODS.iter().enumerate().find(|(_, method)| method.name == name)
}

/// The `selector`-th method, wrapping around (for the fuzz targets).
pub fn nth(selector: usize) -> &'static ApiMethod {
    &METHODS[selector % METHODS.len()]
}
