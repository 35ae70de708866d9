//! The derive macros of annals. Use them through `annals`, which re-exports them:
//! `use annals::aggregate::DomainEvent;` brings the trait and its derive.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::quote;
use syn::ext::IdentExt;
use syn::meta::ParseNestedMeta;
use syn::{parse_macro_input, Attribute, Data, DeriveInput, Error, LitInt, LitStr, Result, Token};

/// Implements `annals::aggregate::DomainEvent` for an enum of events, checking at
/// compile time that serde writes it the way annals stores events: adjacently tagged,
/// `#[serde(tag = "type", content = "data")]`, so that each variant's name is a
/// record's event type and its fields the payload. The impl lists in `EVENT_TYPES`
/// every event type the enum reads (after serde's `rename` and `rename_all`, with
/// each `alias`; not the variants serde skips when reading), for typed filters.
///
/// `#[domain_event(schema_version = N)]` sets `SCHEMA_VERSION` (default 1).
#[proc_macro_derive(DomainEvent, attributes(domain_event))]
pub fn derive_domain_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand(&input).unwrap_or_else(Error::into_compile_error).into()
}

fn expand(input: &DeriveInput) -> Result<TokenStream2> {
    let Data::Enum(data) = &input.data else {
        return Err(Error::new_spanned(
            &input.ident,
            "DomainEvent derives for an enum: one variant per event type",
        ));
    };
    let serde = SerdeAttrs::of(&input.attrs)?;
    if serde.tag.as_deref() != Some("type") || serde.content.as_deref() != Some("data") {
        return Err(Error::new_spanned(
            &input.ident,
            "a domain event enum needs #[serde(tag = \"type\", content = \"data\")]: \
             the variant's name is the record's event type, its fields the payload",
        ));
    }
    let schema_version = schema_version(&input.attrs)?;
    let mut names: Vec<String> = Vec::new();
    for variant in &data.variants {
        let attrs = SerdeAttrs::of(&variant.attrs)?;
        if attrs.skip_reading {
            continue;
        }
        let name = match attrs.rename {
            Some(name) => name,
            None => rename_all(serde.rename_all.as_deref(), &variant.ident.unraw().to_string())
                .ok_or_else(|| Error::new_spanned(&input.ident, "unknown serde rename_all rule"))?,
        };
        for name in std::iter::once(name).chain(attrs.aliases) {
            if names.contains(&name) {
                return Err(Error::new_spanned(
                    &variant.ident,
                    format!("two variants are both read as event type {name:?}"),
                ));
            }
            names.push(name);
        }
    }
    let ident = &input.ident;
    let (impl_generics, type_generics, where_clause) = input.generics.split_for_impl();
    Ok(quote! {
        impl #impl_generics ::annals::aggregate::DomainEvent for #ident #type_generics #where_clause {
            const SCHEMA_VERSION: u32 = #schema_version;
            const EVENT_TYPES: &'static [&'static str] = &[#(#names),*];
        }
    })
}

/// What annals needs of serde's attributes on the enum or on a variant.
#[derive(Default)]
struct SerdeAttrs {
    tag: Option<String>,
    content: Option<String>,
    rename_all: Option<String>,
    rename: Option<String>,
    aliases: Vec<String>,
    /// serde skips the variant when it reads (`skip`, `skip_deserializing`).
    skip_reading: bool,
}

impl SerdeAttrs {
    fn of(attrs: &[Attribute]) -> Result<Self> {
        let mut found = SerdeAttrs::default();
        for attr in attrs.iter().filter(|attr| attr.path().is_ident("serde")) {
            attr.parse_nested_meta(|meta| {
                let text = |meta: &ParseNestedMeta| -> Result<String> { Ok(meta.value()?.parse::<LitStr>()?.value()) };
                if meta.path.is_ident("tag") {
                    found.tag = Some(text(&meta)?);
                } else if meta.path.is_ident("content") {
                    found.content = Some(text(&meta)?);
                } else if meta.path.is_ident("rename_all") || meta.path.is_ident("rename") {
                    if !meta.input.peek(Token![=]) {
                        return Err(meta.error(
                            "an event type must read and write the same: use rename = \"…\" or rename_all = \"…\"",
                        ));
                    }
                    let value = text(&meta)?;
                    if meta.path.is_ident("rename") {
                        found.rename = Some(value);
                    } else {
                        found.rename_all = Some(value);
                    }
                } else if meta.path.is_ident("alias") {
                    found.aliases.push(text(&meta)?);
                } else if meta.path.is_ident("skip") || meta.path.is_ident("skip_deserializing") {
                    found.skip_reading = true;
                } else if meta.path.is_ident("into") || meta.path.is_ident("from") || meta.path.is_ident("try_from") {
                    return Err(meta.error(
                        "with into/from the enum's own serde form is not what is stored; derive DomainEvent on the stored type",
                    ));
                } else {
                    skip_value(&meta)?;
                }
                Ok(())
            })?;
        }
        Ok(found)
    }
}

/// Consumes whatever a serde key annals does not read carries: `= value` or `(…)`.
fn skip_value(meta: &ParseNestedMeta) -> Result<()> {
    if meta.input.peek(Token![=]) {
        meta.value()?.parse::<syn::Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        meta.parse_nested_meta(|inner| skip_value(&inner))?;
    }
    Ok(())
}

fn schema_version(attrs: &[Attribute]) -> Result<u32> {
    let mut version = 1;
    for attr in attrs.iter().filter(|attr| attr.path().is_ident("domain_event")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("schema_version") {
                let literal: LitInt = meta.value()?.parse()?;
                version = literal.base10_parse()?;
                if version == 0 {
                    return Err(Error::new_spanned(literal, "schema versions start at 1"));
                }
                Ok(())
            } else {
                Err(meta.error("unknown domain_event key; the one key is schema_version = N"))
            }
        })?;
    }
    Ok(version)
}

/// `variant` (a Rust variant name, in PascalCase) as serde's `rename_all` rule writes
/// it, by serde's own rules (ASCII case only); `None` for a rule serde does not have.
fn rename_all(rule: Option<&str>, variant: &str) -> Option<String> {
    let snake = || {
        let mut out = String::new();
        for (i, c) in variant.char_indices() {
            if c.is_ascii_uppercase() && i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        }
        out
    };
    Some(match rule {
        None | Some("PascalCase") => variant.to_owned(),
        Some("lowercase") => variant.to_ascii_lowercase(),
        Some("UPPERCASE") => variant.to_ascii_uppercase(),
        Some("camelCase") => variant[..1].to_ascii_lowercase() + &variant[1..],
        Some("snake_case") => snake(),
        Some("SCREAMING_SNAKE_CASE") => snake().to_ascii_uppercase(),
        Some("kebab-case") => snake().replace('_', "-"),
        Some("SCREAMING-KEBAB-CASE") => snake().to_ascii_uppercase().replace('_', "-"),
        Some(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::rename_all;

    #[test]
    fn renames_as_serde_does() {
        let cases = [
            (None, "LineAdded"),
            (Some("lowercase"), "lineadded"),
            (Some("UPPERCASE"), "LINEADDED"),
            (Some("camelCase"), "lineAdded"),
            (Some("snake_case"), "line_added"),
            (Some("SCREAMING_SNAKE_CASE"), "LINE_ADDED"),
            (Some("kebab-case"), "line-added"),
            (Some("SCREAMING-KEBAB-CASE"), "LINE-ADDED"),
        ];
        for (rule, expected) in cases {
            assert_eq!(rename_all(rule, "LineAdded").as_deref(), Some(expected), "{rule:?}");
        }
        assert_eq!(rename_all(Some("Title Case"), "LineAdded"), None);
        // serde makes kebab case from snake case.
        assert_eq!(
            rename_all(Some("kebab-case"), "Line_Added").as_deref(),
            Some("line--added")
        );
    }
}
