//! A family's filter table as `iptables -S` lists it: tgknock's chain, the jumps to it.

use crate::base::addr::Family;
use crate::firewall::rules::{Listing, Reach};

/// A family's filter table as `iptables -S` lists it: tgknock's chain and the jumps to it,
/// and where this process cannot compare the chain's rules yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chain {
    /// The family whose table it is.
    pub(crate) family: Family,
    /// The chain exists.
    pub(crate) exists: bool,
    /// `-A INPUT -j CHAIN` rules.
    pub(crate) jumps: usize,
    /// The first INPUT rule is the jump.
    pub(crate) jump_first: bool,
    /// The chain's rules, backend-neutral.
    pub(crate) listing: Listing,
    /// Positions of rules this process has not written (see [`super::Reference`]).
    pub(crate) unknown: Option<Vec<usize>>,
}

impl Chain {
    /// No chain, no jump.
    pub(crate) fn new(family: Family) -> Chain {
        Chain {
            family,
            exists: false,
            jumps: 0,
            jump_first: false,
            listing: Listing::default(),
            unknown: None,
        }
    }

    /// How the kernel reaches the chain, in the words of a drift message.
    pub(super) fn reach(&self, chain: &str) -> Reach {
        if !self.exists {
            Reach::Gone
        } else if self.jumps == 0 {
            Reach::Unreached(format!("the jump from INPUT to the chain {chain} is gone"))
        } else if self.jumps > 1 {
            Reach::Otherwise(format!(
                "INPUT jumps to the chain {chain} {} times",
                self.jumps
            ))
        } else if !self.jump_first {
            Reach::Otherwise(format!(
                "the jump to the chain {chain} is no longer the first rule of INPUT"
            ))
        } else {
            Reach::AsWritten
        }
    }
}

impl std::ops::Deref for Chain {
    type Target = Listing;
    fn deref(&self) -> &Listing {
        &self.listing
    }
}

impl std::ops::DerefMut for Chain {
    fn deref_mut(&mut self) -> &mut Listing {
        &mut self.listing
    }
}
