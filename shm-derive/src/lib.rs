//! `#[message]`: makes a plain struct a `shm_ring::Message` in one line.
//!
//! ```ignore
//! #[shm_ring::message]                       // or #[shm_ring::message(name = "quotes/v2")]
//! struct Quote { instrument: u32, side: u32, price: i64, quantity: u64 }
//! ```
//!
//! expands to the struct with `#[repr(C)]` (unless it has a `repr` already), zerocopy's
//! `FromBytes`, `IntoBytes`, `Immutable` and `KnownLayout` derived through the
//! `zerocopy` that `shm_ring` re-exports (so the user's crate needs no zerocopy line),
//! and `impl Message` with `TYPE_NAME` the type's path (`module_path!()::Quote`) or the
//! given name.
//!
//! It is an attribute, not a `derive`: a derive macro can only add items next to a
//! type, never attributes on it, so it could not derive zerocopy's traits, whose
//! implementations only zerocopy's own derives may write.
//!
//! Refused at compile time, each with the reason: enums and unions (a peer may write a
//! discriminant no variant has), generic types (the type name must be one name), and
//! fields of types that some bytes would make undefined behaviour or that mean nothing
//! in another process: `bool`, `char`, references, raw and function pointers, `Box`,
//! `Vec`, `String`, `Rc`, `Arc`, `Cell`-likes. A struct with padding is refused too
//! (a peer would read bytes nobody wrote): by an assertion that its size is the sum
//! of its fields' sizes, and by zerocopy's `IntoBytes`.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{ToTokens, quote};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Error, Fields, LitStr, Meta, Path, Token, Type};

/// Makes a plain struct a `shm_ring::Message`: see the [crate docs](crate).
/// `#[message(name = "...")]` sets the type name (default: the type's path).
#[proc_macro_attribute]
pub fn message(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(args, item, "::shm_ring")
}

/// [`message`] for the `shm_transport` facade, whose items live under
/// `shm_transport::ring` (re-exported there as `shm_transport::message`).
#[doc(hidden)]
#[proc_macro_attribute]
pub fn facade_message(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(args, item, "::shm_transport::ring")
}

fn expand(args: TokenStream, item: TokenStream, krate: &str) -> TokenStream {
    match try_expand(args.into(), item.into(), krate) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn try_expand(args: TokenStream2, item: TokenStream2, krate: &str) -> Result<TokenStream2, Error> {
    let mut name: Option<LitStr> = None;
    let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(args)?;
    for meta in metas {
        match &meta {
            Meta::NameValue(nv) if nv.path.is_ident("name") => {
                name = Some(syn::parse2(nv.value.to_token_stream())?);
            }
            other => {
                return Err(Error::new(
                    other.span(),
                    "expected `name = \"...\"`: the message's type name",
                ));
            }
        }
    }
    let mut input: DeriveInput = syn::parse2(item)?;
    let fields = match &input.data {
        Data::Struct(s) => &s.fields,
        Data::Enum(e) => {
            return Err(Error::new(
                e.enum_token.span(),
                "a message cannot be an enum: a peer may write a discriminant no variant has; \
                 use a struct with an integer field for the kind",
            ));
        }
        Data::Union(u) => {
            return Err(Error::new(
                u.union_token.span(),
                "a message cannot be a union: use a struct of plain fields",
            ));
        }
    };
    if !input.generics.params.is_empty() {
        return Err(Error::new(
            input.generics.span(),
            "a message cannot be generic: its type name must name one type",
        ));
    }
    for field in fields.iter() {
        check_type(&field.ty)?;
    }
    let krate: Path = syn::parse_str(krate)?;
    let zerocopy = format!("{}::zerocopy", krate.to_token_stream()).replace(' ', "");
    if !input.attrs.iter().any(|a| a.path().is_ident("repr")) {
        input.attrs.push(syn::parse_quote!(#[repr(C)]));
    }
    input.attrs.push(syn::parse_quote!(
        #[derive(
            #krate::zerocopy::FromBytes,
            #krate::zerocopy::IntoBytes,
            #krate::zerocopy::Immutable,
            #krate::zerocopy::KnownLayout
        )]
    ));
    input
        .attrs
        .push(syn::parse_quote!(#[zerocopy(crate = #zerocopy)]));
    let ident = &input.ident;
    let type_name = match name {
        Some(name) => quote!(#name),
        None => {
            let ident = LitStr::new(&ident.to_string(), Span::call_site());
            quote!(::core::concat!(::core::module_path!(), "::", #ident))
        }
    };
    let sizes = fields.iter().map(|f| {
        let ty = &f.ty;
        quote!(::core::mem::size_of::<#ty>())
    });
    let padding = format!(
        "`{ident}` has padding bytes (its size is more than the sum of its fields'): a peer \
         would read bytes nobody wrote. Add explicit fields for them (`_pad: [u8; N]`), or \
         order the fields from the largest alignment down"
    );
    let packed_or_unit = matches!(fields, Fields::Unit);
    let padding_check = if packed_or_unit {
        quote!()
    } else {
        quote! {
            const _: () = ::core::assert!(
                ::core::mem::size_of::<#ident>() == 0 #(+ #sizes)*,
                #padding
            );
        }
    };
    Ok(quote! {
        #input

        impl #krate::Message for #ident {
            const TYPE_NAME: &'static str = #type_name;
        }

        #padding_check
    })
}

/// Refuses a field type that some bytes would make undefined behaviour, or that means
/// nothing in another process, with the reason.
fn check_type(ty: &Type) -> Result<(), Error> {
    let refuse = |why: &str| Err(Error::new(ty.span(), why));
    match ty {
        Type::Reference(_) | Type::Ptr(_) | Type::BareFn(_) => refuse(
            "a message cannot hold a pointer or a reference: an address means nothing in \
             another process, which maps the segment elsewhere; send a `ShmOffset` (a pool \
             chunk) or an index",
        ),
        Type::Array(a) => check_type(&a.elem),
        Type::Tuple(t) if t.elems.is_empty() => Ok(()),
        Type::Tuple(_) => refuse(
            "a message cannot hold a tuple: its layout is unspecified; use a struct or an array",
        ),
        Type::Slice(_) | Type::TraitObject(_) | Type::ImplTrait(_) => {
            refuse("a message has a fixed size: no slices or trait objects")
        }
        Type::Paren(p) => check_type(&p.elem),
        Type::Group(g) => check_type(&g.elem),
        Type::Path(p) => {
            let Some(last) = p.path.segments.last() else {
                return Ok(());
            };
            match last.ident.to_string().as_str() {
                "bool" => refuse(
                    "a message cannot hold a `bool`: a peer may write any byte into shared \
                     memory, and a `bool` that is not 0 or 1 is undefined behaviour; use `u8`",
                ),
                "char" => refuse(
                    "a message cannot hold a `char`: a peer may write any 4 bytes, and most \
                     are not a valid `char`; use `u32`",
                ),
                "Box" | "Vec" | "String" | "Rc" | "Arc" => refuse(
                    "a message cannot own heap memory: it lives in one process's heap, which \
                     no other process sees; use a fixed-size array, or a pool chunk \
                     (`ShmOffset`)",
                ),
                "Cell" | "RefCell" | "UnsafeCell" | "Mutex" | "RwLock" => refuse(
                    "a message cannot have interior mutability: a received message is read in \
                     place while the ring may reuse its slot",
                ),
                "NonZeroU8" | "NonZeroU16" | "NonZeroU32" | "NonZeroU64" | "NonZeroUsize"
                | "NonZeroI8" | "NonZeroI16" | "NonZeroI32" | "NonZeroI64" | "NonZeroIsize"
                | "NonZero" | "NonNull" | "Option" => refuse(
                    "a message cannot hold a type with invalid bit patterns (a niche): a peer \
                     may write zeros; use the plain integer",
                ),
                _ => Ok(()),
            }
        }
        _ => Ok(()),
    }
}
