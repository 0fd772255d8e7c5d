"""The ImageNet backbones that pre-annotation and training share; ground floor, no stage here."""
