//! `proto_enum!`: enums that serialize like protobuf enums in proto3 JSON.
//!
//! Istio's CRDs are protobuf messages; in YAML and JSON an enum is written by its name
//! (`mode: STRICT`) and, as proto3 JSON allows, may also be written by its number (`mode: 3`).
//! The first variant is the zero value and therefore the `Default`.

/// Declares a protobuf-style enum: `Serialize` as the name, `Deserialize` from the name or the
/// number, `Default` = the first (zero) variant, `Display`/`FromStr` by name, and a `ALL` list.
macro_rules! proto_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $(#[$fmeta:meta])* $first:ident = ($fnum:expr, $fwire:literal),
            $( $(#[$vmeta:meta])* $variant:ident = ($num:expr, $wire:literal) ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $(#[$fmeta])*
            #[default]
            $first,
            $( $(#[$vmeta])* $variant, )+
        }

        #[allow(dead_code)]
        impl $name {
            /// Every variant, in declaration (protobuf number) order.
            pub const ALL: &'static [$name] = &[$name::$first, $($name::$variant),+];

            /// The protobuf name of this value, as written in YAML.
            pub fn as_str(&self) -> &'static str {
                match self { $name::$first => $fwire, $( $name::$variant => $wire, )+ }
            }

            /// The protobuf number of this value.
            pub fn number(&self) -> i32 {
                match self { $name::$first => $fnum, $( $name::$variant => $num, )+ }
            }

            /// The value for a protobuf number, if it is known.
            pub fn from_number(n: i64) -> Option<Self> {
                if n == $fnum { return Some($name::$first); }
                $( if n == $num { return Some($name::$variant); } )+
                None
            }

            /// Whether this is the zero (unset) value.
            pub fn is_default(&self) -> bool {
                *self == Self::default()
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::error::UnknownEnumValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $fwire => Ok($name::$first),
                    $( $wire => Ok($name::$variant), )+
                    _ => Err($crate::error::UnknownEnumValue {
                        value: s.to_string(),
                        expected: &[$fwire, $($wire),+],
                    }),
                }
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> ::serde::de::Visitor<'de> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                        f.write_str(concat!("one of ", $fwire, $( ", ", $wire ),+))
                    }
                    fn visit_str<E: ::serde::de::Error>(self, v: &str) -> Result<$name, E> {
                        v.parse().map_err(E::custom)
                    }
                    fn visit_i64<E: ::serde::de::Error>(self, v: i64) -> Result<$name, E> {
                        $name::from_number(v).ok_or_else(|| E::custom(format!(
                            "unknown {} number {}", stringify!($name), v)))
                    }
                    fn visit_u64<E: ::serde::de::Error>(self, v: u64) -> Result<$name, E> {
                        i64::try_from(v).map_err(E::custom).and_then(|v| self.visit_i64(v))
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

pub(crate) use proto_enum;
