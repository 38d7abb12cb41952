//! The multi-value register: a DVV set of JSON documents, as a plain
//! bucket keeps values, but written by operation.
//!
//! A write replaces the values its read (the context) saw and keeps the
//! rest beside it, whether they were written through another replica or
//! through the same one. (The crdts crate's `MVReg` keeps one vector
//! clock per value, so a blind write through the coordinator of an
//! earlier value would claim to have seen it and replace it.)

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::map::merge_versions;
use super::CrdtError;
use crate::merge::Merge;
use crate::{Actor, Dot, VersionVector};

/// A multi-value register of JSON documents (as text).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MvRegister {
    clock: VersionVector,
    values: BTreeMap<Dot, String>,
}

impl MvRegister {
    /// Every write the register has seen.
    pub fn clock(&self) -> &VersionVector {
        &self.clock
    }

    /// The values (JSON text), by dot.
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.values.values().map(String::as_str)
    }

    /// Writes `value` as `actor`, replacing what `ctx` saw.
    pub(super) fn write(
        &mut self,
        value: String,
        actor: &Actor,
        ctx: &VersionVector,
    ) -> Result<(), CrdtError> {
        let counter = self
            .clock
            .get(actor)
            .max(ctx.get(actor))
            .checked_add(1)
            .ok_or_else(|| CrdtError::Overflow(actor.clone()))?;
        self.values.retain(|d, _| !ctx.covers(d));
        self.clock.join(ctx);
        self.clock.witness(actor, counter);
        let dot = Dot {
            actor: actor.clone(),
            counter,
        };
        self.values.insert(dot, value);
        Ok(())
    }
}

impl Merge for MvRegister {
    fn merge(&mut self, other: &Self) {
        self.values = merge_versions(
            &self.values,
            &self.clock,
            &other.values,
            &other.clock,
            |a, b| a.max(b).clone(),
        );
        self.clock.join(&other.clock);
    }
}
