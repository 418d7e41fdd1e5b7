"""Local OAuth helper: runs the consent flow in the user's browser and shows the refresh token that
POST /calendar/create_outlook_calendar needs (`make oauth-helper`, `python -m oauth_helper`)."""
