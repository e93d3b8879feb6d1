"""The synthetic NOCS- and HouseCat6D-format dataset generator."""
