//! The sessions' cipher suites: the Noise protocol each one names, which suites a node
//! offers, and which one a client picks for a worker.
//!
//! `Noise_IK_25519_ChaChaPoly_BLAKE2s` is the suite every node accepts. A node whose CPU
//! has AES and carry-less multiply instructions also offers
//! `Noise_IK_25519_AESGCM_BLAKE2s`, which there costs a fraction of ChaCha20-Poly1305's
//! CPU time per byte (hidden states are large: a 128-token forward of the default model
//! is 295 KB each way per hop). Where either end lacks the hardware, AES-GCM would be
//! slower and is neither offered nor chosen. A worker lists what it accepts in its signed
//! announcement, so a relay cannot strip the faster suite; both are 256-bit-key AEADs
//! with the same Noise security, so a forced fall-back to ChaChaPoly costs speed only.

use serde::Serialize;

/// The AEAD of a session's Noise protocol; X25519 and BLAKE2s are common to both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CipherSuite {
    /// ChaCha20-Poly1305: accepted by every node.
    ChaChaPoly,
    /// AES-256-GCM: offered by nodes with AES hardware.
    AesGcm,
}

impl CipherSuite {
    /// Every suite, the mandatory one first.
    pub const ALL: [CipherSuite; 2] = [CipherSuite::ChaChaPoly, CipherSuite::AesGcm];

    /// The Noise protocol name of a session in this suite.
    pub fn noise_params(self) -> &'static str {
        match self {
            CipherSuite::ChaChaPoly => "Noise_IK_25519_ChaChaPoly_BLAKE2s",
            CipherSuite::AesGcm => "Noise_IK_25519_AESGCM_BLAKE2s",
        }
    }

    /// Short name, as in configuration and `cocoon peers`.
    pub fn name(self) -> &'static str {
        match self {
            CipherSuite::ChaChaPoly => "chachapoly",
            CipherSuite::AesGcm => "aesgcm",
        }
    }

    /// The suite of a short name.
    pub fn from_name(name: &str) -> Option<CipherSuite> {
        CipherSuite::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The suites a node accepts, given whether its CPU has AES hardware: ChaChaPoly
    /// always, AES-GCM where it is fast.
    pub fn offered(aes_hardware: bool) -> Vec<CipherSuite> {
        if aes_hardware {
            vec![CipherSuite::ChaChaPoly, CipherSuite::AesGcm]
        } else {
            vec![CipherSuite::ChaChaPoly]
        }
    }

    /// The suite a client that offers `client_offers` uses with a worker that offers
    /// `worker_offers`: AES-GCM when both list it (both run it in hardware), else
    /// ChaChaPoly, which every worker accepts whatever its list says.
    pub fn choose(client_offers: &[CipherSuite], worker_offers: &[CipherSuite]) -> CipherSuite {
        let aes = CipherSuite::AesGcm;
        if client_offers.contains(&aes) && worker_offers.contains(&aes) {
            CipherSuite::AesGcm
        } else {
            CipherSuite::ChaChaPoly
        }
    }
}

impl std::fmt::Display for CipherSuite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether this CPU runs AES-GCM in hardware (AES rounds and carry-less multiply), the
/// condition under which ring's AES-GCM is faster than its ChaCha20-Poly1305.
pub fn aes_hardware() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_params_parse() {
        for s in CipherSuite::ALL {
            assert_eq!(CipherSuite::from_name(s.name()), Some(s));
            let params: snow::params::NoiseParams = s.noise_params().parse().unwrap();
            assert_eq!(params.name, s.noise_params());
        }
        assert_eq!(CipherSuite::from_name("aes"), None);
    }

    #[test]
    fn aes_gcm_only_when_both_ends_have_the_hardware() {
        let both = CipherSuite::offered(true);
        let chacha = CipherSuite::offered(false);
        assert_eq!(chacha, [CipherSuite::ChaChaPoly]);
        assert_eq!(CipherSuite::choose(&both, &both), CipherSuite::AesGcm);
        assert_eq!(CipherSuite::choose(&chacha, &both), CipherSuite::ChaChaPoly);
        assert_eq!(CipherSuite::choose(&both, &chacha), CipherSuite::ChaChaPoly);
        // A worker whose list leaves out ChaChaPoly still gets it: it is mandatory.
        assert_eq!(CipherSuite::choose(&chacha, &[]), CipherSuite::ChaChaPoly);
    }
}
