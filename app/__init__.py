"""image-gateway: an OpenAI-compatible gateway for image generation and editing."""

__version__ = "0.1.0"
