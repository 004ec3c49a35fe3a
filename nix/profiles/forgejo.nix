# Forgejo: see forge.nix.
import ./forge.nix "forgejo"
