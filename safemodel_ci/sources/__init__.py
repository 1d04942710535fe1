"""Where files come from: local paths, git, the Hugging Face Hub, the local Hub cache."""
