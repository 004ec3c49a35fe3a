# Gitea: see forge.nix.
import ./forge.nix "gitea"
