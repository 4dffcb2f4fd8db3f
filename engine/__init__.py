"""Library code of the commands: combines models/, data/ and utils/."""
