//! Pipelines built once per context, under typed keys.
//!
//! Each kernel family declares a key type holding everything that changes its
//! pipelines (shader constants, entry points, bind group layout); the key's
//! type fixes the type of what is stored, so a lookup can never return the
//! wrong kind of value.

use crate::Result;
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// A cache key: its value is what one build under the key produces.
pub(crate) trait PipelineKey: Clone + Eq + Hash + Send + Sync + 'static {
    /// What is built and shared under the key.
    type Built: Send + Sync + 'static;
}

/// One map per key type (`TypeId` of `K` → `HashMap<K, Arc<K::Built>>`), and
/// how many values all of them hold.
#[derive(Clone, Default)]
pub(crate) struct PipelineCache(Arc<Mutex<Maps>>);

#[derive(Default)]
struct Maps {
    by_kind: HashMap<TypeId, Box<dyn Any + Send>>,
    entries: usize,
}

impl std::fmt::Debug for PipelineCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PipelineCache({} entries)", self.len())
    }
}

impl PipelineCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The value built under `key`, building it on first use (a failed build
    /// stores nothing).
    pub(crate) fn get_or_build<K: PipelineKey>(
        &self,
        key: &K,
        build: impl FnOnce() -> Result<K::Built>,
    ) -> Result<Arc<K::Built>> {
        let mut maps = self.lock();
        let entries = maps
            .by_kind
            .entry(TypeId::of::<K>())
            .or_insert_with(|| Box::new(HashMap::<K, Arc<K::Built>>::new()));
        let Some(entries) = entries.downcast_mut::<HashMap<K, Arc<K::Built>>>() else {
            unreachable!("the map under TypeId::of::<K>() is always a HashMap<K, _>")
        };
        if let Some(found) = entries.get(key) {
            return Ok(found.clone());
        }
        let built = Arc::new(build()?);
        entries.insert(key.clone(), built.clone());
        maps.entries += 1;
        Ok(built)
    }

    /// Values built so far, over every key type.
    pub(crate) fn len(&self) -> usize {
        self.lock().entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, PartialEq, Eq, Hash)]
    struct A(u32);
    impl PipelineKey for A {
        type Built = String;
    }
    #[derive(Clone, PartialEq, Eq, Hash)]
    struct B(u32);
    impl PipelineKey for B {
        type Built = u64;
    }

    #[test]
    fn keys_of_different_types_never_collide() {
        let cache = PipelineCache::default();
        let a = cache.get_or_build(&A(1), || Ok("one".to_string())).unwrap();
        let b = cache.get_or_build(&B(1), || Ok(7)).unwrap();
        assert_eq!(*a, "one");
        assert_eq!(*b, 7);
        // Built once: the second build closure is not called.
        let again = cache
            .get_or_build(&A(1), || -> Result<String> { unreachable!() })
            .unwrap();
        assert!(Arc::ptr_eq(&a, &again));
        let other = cache.get_or_build(&A(2), || Ok("two".into())).unwrap();
        assert_eq!(*other, "two");
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn a_failed_build_stores_nothing() {
        let cache = PipelineCache::default();
        let err = cache.get_or_build(&A(1), || Err(crate::Error::EmptyVocab));
        assert!(err.is_err());
        let ok = cache.get_or_build(&A(1), || Ok("built".into())).unwrap();
        assert_eq!(*ok, "built");
    }
}
