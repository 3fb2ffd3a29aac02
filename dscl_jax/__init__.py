"""dscl_jax: long-tailed representation learning (DSCL + PBSD and peers) in JAX/Flax."""
