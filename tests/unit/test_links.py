"""Meeting-link detection: platform URL forms, real-world invitation bodies, lookup order, raw payloads."""

import dataclasses
from urllib.parse import quote

import pytest

from calbot.links import (
    MeetingLink,
    find_in_text,
    find_meeting_link,
    from_google_event,
    from_graph_event,
    match_url,
    unwrap_url,
)

# --- realistic building blocks ---------------------------------------------------------------------

TEAMS_URL = (
    "https://teams.microsoft.com/l/meetup-join/19%3ameeting_NjQ5ZjE4YjEtNDk5Ny00ZTkzLWI3YzMtZjk2NjE2NDRkZGZm"
    "%40thread.v2/0?context=%7b%22Tid%22%3a%2272f988bf-86f1-41af-91ab-2d7cd011db47%22%2c%22Oid%22%3a"
    "%22a1b2c3d4-e5f6-47a8-9b0c-d1e2f3a4b5c6%22%7d"
)
TEAMS_MEET_URL = "https://teams.microsoft.com/meet/21234567890123?p=AbCdEfGhIjKlMnOp"
ZOOM_URL = "https://us02web.zoom.us/j/85512345678?pwd=dEfGhIjKlMnOpQrStUvWxYz.1"
MEET_URL = "https://meet.google.com/qwe-rtyu-iop"
WEBEX_URL = "https://acme.webex.com/acme/j.php?MTID=m5d8e0a9f0b2c4e6a8c0e2a4b6d8f0a1c"


def safelink(url: str) -> str:
    """Outlook SafeLinks wrapper, as it appears inside an HTML href (so `&` is `&amp;`)."""
    return (
        f"https://nam12.safelinks.protection.outlook.com/?url={quote(url, safe='')}"
        "&amp;data=05%7C02%7Cjane.doe%40contoso.com%7C5f1e2d3c4b5a%7C72f988bf86f141af91ab2d7cd011db47"
        "%7C0%7C0%7C638512345678901234%7CUnknown&amp;sdata=Zm9vYmFyYmF6%2BcXV4%3D&amp;reserved=0"
    )


def google_redirect(url: str) -> str:
    """google.com/url wrapper as Google Calendar writes it into descriptions (HTML-escaped)."""
    return (
        f"https://www.google.com/url?q={quote(url, safe=':/')}"
        "&amp;sa=D&amp;source=calendar&amp;ust=1715700000000000&amp;usg=AOvVaw1AbCdEfGhIjKlMnOpQrStU"
    )


def teams_invitation_html(join_href: str) -> str:
    return f"""<html><head>
<meta http-equiv="Content-Type" content="text/html; charset=utf-8">
<style type="text/css">a {{ background: url(https://zoom.us/j/999); }}</style>
</head><body>
<div><p>Hi all, agenda to follow.</p></div>
<div style="width:100%"><span style="white-space:nowrap;color:#5F5F5F;opacity:.36">________</span></div>
<div class="me-email-text" lang="en-US" style="color:#242424;font-family:'Segoe UI','Helvetica Neue',Arial">
<div style="margin-top:24px;margin-bottom:20px"><span style="font-size:24px;color:#252424">Microsoft Teams
 meeting</span></div>
<div style="margin-bottom:20px"><div style="margin-top:0px;margin-bottom:0px;font-weight:bold">
<span style="font-size:14px;color:#252424">Join on your computer, mobile app or room device</span></div>
<a href="{join_href}" class="me-email-headline" style="font-size:14px;text-decoration:underline;color:#5b5fc7"
 target="_blank" rel="noreferrer noopener">Click here to join the meeting</a></div>
<div style="margin-bottom:20px;margin-top:20px"><div style="margin-bottom:4px">
<span style="font-size:14px;color:#252424">Meeting ID: <span style="font-size:16px">234 567 890 123</span>
</span>
<br><span style="font-size:14px;color:#252424">Passcode: </span>
<span style="font-size:16px">aB3cD4</span></div>
<div style="font-size:14px"><a href="https://www.microsoft.com/en-us/microsoft-teams/download-app"
 class="me-email-link" style="color:#5b5fc7">Download Teams</a> | <a
 href="https://www.microsoft.com/microsoft-teams/join-a-meeting" class="me-email-link">Join on the web</a>
</div></div>
<div style="margin-bottom:4px"><span style="font-size:14px;font-weight:bold">Dial in by phone</span></div>
<a href="tel:+14255550100,,123456789#" class="me-email-link">+1 425-555-0100,,123456789#</a>
<span style="font-size:14px">United States, Redmond</span>
<div><a href="https://aka.ms/JoinTeamsMeeting?omkt=en-US" class="me-email-link">Learn More</a> |
<a href="https://teams.microsoft.com/meetingOptions/?organizerId=a1b2c3d4&amp;tenantId=72f988bf&amp;threadId=19_meeting_NjQ5@thread.v2&amp;messageId=0&amp;language=en-US"
 class="me-email-link">Meeting options</a></div>
</div></body></html>"""


TEAMS_FOOTER_ONLY_HTML = """<div style="font-size:14px"><a
 href="https://www.microsoft.com/en-us/microsoft-teams/download-app">Download Teams</a> |
<a href="tel:+14255550100,,123456789#">+1 425-555-0100,,123456789#</a>
<a href="https://aka.ms/JoinTeamsMeeting?omkt=en-US">Learn More</a> |
<a href="https://teams.microsoft.com/meetingOptions/?organizerId=a1b2&amp;tenantId=72f9&amp;messageId=0">Meeting
 options</a></div>"""

TEAMS_PLAIN_TEXT = f"""
________________________________________________________________________________
Microsoft Teams meeting
Join on your computer, mobile app or room device
Click here to join the meeting<{TEAMS_URL}>
Meeting ID: 234 567 890 123
Passcode: aB3cD4
Download Teams<https://www.microsoft.com/en-us/microsoft-teams/download-app> | Join on the web<https://www.microsoft.com/microsoft-teams/join-a-meeting>
Or call in (audio only)
+1 425-555-0100,,123456789#<tel:+14255550100,,123456789#>   United States, Redmond
Learn More<https://aka.ms/JoinTeamsMeeting?omkt=en-US> | Meeting options<https://teams.microsoft.com/meetingOptions/?organizerId=a1b2>
________________________________________________________________________________
"""

ZOOM_PLAIN_INVITE = f"""Jane Doe is inviting you to a scheduled Zoom meeting.

Topic: Weekly product sync
Time: May 14, 2024 09:00 AM Pacific Time (US and Canada)

Join Zoom Meeting
{ZOOM_URL}

Meeting ID: 855 1234 5678
Passcode: 482913

---

One tap mobile
+16465588656,,85512345678#,,,,*482913# US (New York)
+13017158592,,85512345678#,,,,*482913# US (Washington DC)

Dial by your location
\t+1 646 558 8656 US (New York)
Find your local number: https://us02web.zoom.us/u/kdEfGhIjK
"""

ZOOM_OUTLOOK_SAFELINKS_HTML = f"""<html><body>
<p class="MsoNormal">Hi team,<o:p></o:p></p>
<p class="MsoNormal">Join Zoom Meeting<br>
<a href="{safelink(ZOOM_URL)}" originalsrc="{ZOOM_URL}" shash="aBcD==">{ZOOM_URL}</a><o:p></o:p></p>
<p class="MsoNormal">Meeting ID: 855 1234 5678<br>Passcode: 482913<o:p></o:p></p>
<p class="MsoNormal">One tap mobile<br>+16465588656,,85512345678#,,,,*482913# US (New York)<o:p></o:p></p>
</body></html>"""

GOOGLE_DESCRIPTION_ZOOM_HTML = (
    "Hi all,<br><br>Quarterly review.<br><br>──────────<br><br>Join Zoom Meeting<br>"
    f'<a href="{google_redirect(ZOOM_URL)}" target="_blank">{ZOOM_URL.replace("&", "&amp;")}</a><br><br>'
    "Meeting ID: 855 1234 5678<br>Passcode: 482913<br>"
)

WEBEX_PLAIN_INVITE = f"""Hello,

Jane Doe is inviting you to this Webex meeting.

Join meeting
{WEBEX_URL}

Meeting number (access code): 2550 123 4567
Meeting password: Xy7pQ2rT (99771227 from phones and video systems)

Tap to join from a mobile device (attendees only)
+1-650-479-3208,,25501234567#99771227# Call-in toll number (US/Canada)

Join by video system
Dial 25501234567@acme.webex.com
You can also dial 173.243.2.68 and enter your meeting number.

Need help? Go to https://help.webex.com
"""

WEBEX_HTML_INVITE = """<table><tr><td style="font-size:20px">Join meeting</td></tr>
<tr><td><a href="https://acme.webex.com/acme/j.php?MTID=m0f1e2d3c4b5a69788796a5b4c3d2e1f0&amp;from=outlook"
 style="color:#FFFFFF">Join meeting</a></td></tr>
<tr><td>Join by phone<br>
<a href="tel:%2B1-650-479-3208,,*01*25501234567%23%23*01*">+1-650-479-3208</a></td></tr>
<tr><td>Join from a video system or application<br>Dial <a href="sip:25501234567@acme.webex.com">
25501234567@acme.webex.com</a></td></tr></table>"""

GOTO_PLAIN_INVITE = """Weekly Ops Review
Mon, May 13, 2024 10:00 AM - 11:00 AM (EDT)

Please join my meeting from your computer, tablet or smartphone.
https://meet.goto.com/123456789

You can also dial in using your phone.
Access Code: 123-456-789
United States: +1 (872) 240-3212

Get the app now and be ready when your first meeting starts:
https://meet.goto.com/install
"""

# --- the table ------------------------------------------------------------------------------------

CASES = [
    # ---- Google Meet ------------------------------------------------------------------------------
    pytest.param(MEET_URL, MEET_URL, "google_meet", id="meet-plain"),
    pytest.param(
        "Join: meet.google.com/xyz-abcd-uvw",
        "https://meet.google.com/xyz-abcd-uvw",
        "google_meet",
        id="meet-schemeless",
    ),
    pytest.param(
        "http://meet.google.com/abc-defg-hij.",
        "https://meet.google.com/abc-defg-hij",
        "google_meet",
        id="meet-http-upgraded-trailing-dot",
    ),
    pytest.param(
        "https://meet.google.com/abc-defg-hij?authuser=1&hs=122",
        "https://meet.google.com/abc-defg-hij?authuser=1&hs=122",
        "google_meet",
        id="meet-query-kept",
    ),
    pytest.param(
        "Use https://meet.google.com/lookup/eng-standup for the call",
        "https://meet.google.com/lookup/eng-standup",
        "google_meet",
        id="meet-lookup",
    ),
    pytest.param(
        f"Join with Google Meet: {MEET_URL}\nJoin by phone\n(US) +1 617-675-4444 PIN: 123 456 789 0123#\n\n"
        "More phone numbers: https://tel.meet/qwe-rtyu-iop?pin=1234567890123",
        MEET_URL,
        "google_meet",
        id="meet-google-description-text",
    ),
    pytest.param(
        f'<a href="{google_redirect(MEET_URL)}">Join</a>',
        MEET_URL,
        "google_meet",
        id="meet-google-redirect-href",
    ),
    pytest.param(
        "(see https://meet.google.com/abc-defg-hij)",
        "https://meet.google.com/abc-defg-hij",
        "google_meet",
        id="meet-in-parentheses",
    ),
    pytest.param("https://meet.google.com/", None, None, id="neg-meet-root"),
    pytest.param("https://meet.google.com/landing?authuser=0", None, None, id="neg-meet-landing"),
    pytest.param("Start a call at meet.google.com", None, None, id="neg-meet-bare-host"),
    pytest.param("https://meet.google.com/abc-defg", None, None, id="neg-meet-malformed-code"),
    pytest.param("https://tel.meet/qwe-rtyu-iop?pin=1234567890123", None, None, id="neg-meet-phone-page"),
    # ---- Zoom -------------------------------------------------------------------------------------
    pytest.param(ZOOM_PLAIN_INVITE, ZOOM_URL, "zoom", id="zoom-plain-invitation"),
    pytest.param(
        "Zoom: https://acme.zoom.us/j/123?pwd=abc",
        "https://acme.zoom.us/j/123?pwd=abc",
        "zoom",
        id="zoom-location-vanity",
    ),
    pytest.param("zoom.us/j/123", "https://zoom.us/j/123", "zoom", id="zoom-schemeless"),
    pytest.param(
        "Webinar: https://acme.zoom.us/w/98765432101?tk=AbC123&uuid=WN_xYz",
        "https://acme.zoom.us/w/98765432101?tk=AbC123&uuid=WN_xYz",
        "zoom",
        id="zoom-webinar-w",
    ),
    pytest.param(
        "My room: https://zoom.us/my/jane.doe!", "https://zoom.us/my/jane.doe", "zoom", id="zoom-personal-my"
    ),
    pytest.param(
        "https://zoom.us/s/91234567890?zak=eyJ0eXAiOiJKV1Qi",
        "https://zoom.us/s/91234567890?zak=eyJ0eXAiOiJKV1Qi",
        "zoom",
        id="zoom-host-start-s",
    ),
    pytest.param(
        "https://www.zoomgov.com/j/1612345678?pwd=QWxhZGRpbg",
        "https://www.zoomgov.com/j/1612345678?pwd=QWxhZGRpbg",
        "zoom",
        id="zoom-zoomgov",
    ),
    pytest.param(
        "agency.zoomgov.com/j/1612345678",
        "https://agency.zoomgov.com/j/1612345678",
        "zoom",
        id="zoom-zoomgov-subdomain-schemeless",
    ),
    pytest.param(
        "https://zoom.us/wc/join/91234567890",
        "https://zoom.us/wc/join/91234567890",
        "zoom",
        id="zoom-web-client",
    ),
    pytest.param(ZOOM_OUTLOOK_SAFELINKS_HTML, ZOOM_URL, "zoom", id="zoom-outlook-safelinks-html"),
    pytest.param(GOOGLE_DESCRIPTION_ZOOM_HTML, ZOOM_URL, "zoom", id="zoom-google-redirect-html"),
    pytest.param(
        "https://zoom.us/j/123?pwd&#x3D;abc&amp;from=addon",
        "https://zoom.us/j/123?pwd=abc&from=addon",
        "zoom",
        id="zoom-entities-decoded",
    ),
    pytest.param(
        "Meeting link: <https://zoom.us/j/5551234567>.",
        "https://zoom.us/j/5551234567",
        "zoom",
        id="zoom-angle-brackets",
    ),
    pytest.param(
        "Join here: https://zoom.us/j/5551234567&nbsp;&nbsp;Passcode 1",
        "https://zoom.us/j/5551234567",
        "zoom",
        id="zoom-nbsp-trimmed",
    ),
    pytest.param(
        "HTTPS://US02WEB.ZOOM.US/j/85512345678#success",
        "https://us02web.zoom.us/j/85512345678#success",
        "zoom",
        id="zoom-uppercase-host-fragment",
    ),
    pytest.param(
        "https://zoom.us:443/j/85512345678",
        "https://zoom.us/j/85512345678",
        "zoom",
        id="zoom-default-port-dropped",
    ),
    pytest.param(
        "[Join](https://zoom.us/j/85512345678)", "https://zoom.us/j/85512345678", "zoom", id="zoom-markdown"
    ),
    pytest.param("https://zoom.us", None, None, id="neg-zoom-home"),
    pytest.param("Plans: https://zoom.us/pricing", None, None, id="neg-zoom-pricing"),
    pytest.param("Install the client first: https://zoom.us/download", None, None, id="neg-zoom-download"),
    pytest.param(
        "https://support.zoom.us/hc/en-us/articles/201362193-Joining-a-Zoom-meeting",
        None,
        None,
        id="neg-zoom-support",
    ),
    pytest.param("https://zoom.us/signin#/login", None, None, id="neg-zoom-signin"),
    pytest.param(
        "Register: https://zoom.us/webinar/register/WN_AbCdEfGh", None, None, id="neg-zoom-register"
    ),
    pytest.param(
        "Find your local number: https://us02web.zoom.us/u/kdEfGhIjK", None, None, id="neg-zoom-local-numbers"
    ),
    pytest.param("https://evil.com/?zoom.us/j/1", None, None, id="neg-zoom-in-query-of-other-host"),
    pytest.param("https://zoom.us.evil.com/j/1", None, None, id="neg-zoom-suffix-lookalike"),
    pytest.param("https://evilzoom.us/j/1", None, None, id="neg-zoom-prefix-lookalike"),
    pytest.param("https://zoom.us@evil.com/j/1", None, None, id="neg-zoom-userinfo-trick"),
    pytest.param("https://evil.com\\@zoom.us/j/1", None, None, id="neg-zoom-backslash-trick"),
    pytest.param("+1 646 558 8656,,85512345678# US (New York)", None, None, id="neg-phone-dial-in-line"),
    pytest.param("tel:+16465588656,,85512345678#", None, None, id="neg-tel-uri"),
    pytest.param(
        '<a href="tel:+16465588656,,85512345678#">+1 646 558 8656</a>', None, None, id="neg-tel-href"
    ),
    pytest.param(
        'Questions? <a href="mailto:meetings@zoom.us">meetings@zoom.us</a>', None, None, id="neg-mailto-href"
    ),
    pytest.param("mailto:?subject=Sync&body=https://zoom.us/j/123", None, None, id="neg-link-inside-mailto"),
    # ---- Microsoft Teams --------------------------------------------------------------------------
    pytest.param(teams_invitation_html(TEAMS_URL), TEAMS_URL, "teams", id="teams-invitation-html"),
    pytest.param(
        teams_invitation_html(TEAMS_URL + "&amp;btype=a&amp;role=a"),
        TEAMS_URL + "&btype=a&role=a",
        "teams",
        id="teams-invitation-html-amp",
    ),
    pytest.param(
        teams_invitation_html(TEAMS_MEET_URL), TEAMS_MEET_URL, "teams", id="teams-new-meet-form-html"
    ),
    pytest.param(teams_invitation_html(safelink(TEAMS_URL)), TEAMS_URL, "teams", id="teams-safelinks-html"),
    pytest.param(TEAMS_PLAIN_TEXT, TEAMS_URL, "teams", id="teams-plain-text-body"),
    pytest.param(
        "Join: https://teams.live.com/meet/9876543210123?p=XyZ123abc",
        "https://teams.live.com/meet/9876543210123?p=XyZ123abc",
        "teams",
        id="teams-live-consumer",
    ),
    pytest.param(
        "https://gov.teams.microsoft.us/l/meetup-join/19%3ameeting_Zm9v%40thread.v2/0?context=%7b%7d",
        "https://gov.teams.microsoft.us/l/meetup-join/19%3ameeting_Zm9v%40thread.v2/0?context=%7b%7d",
        "teams",
        id="teams-gcc-high",
    ),
    pytest.param(
        "https://dod.teams.microsoft.us/l/meetup-join/19%3ameeting_YmFy%40thread.v2/0",
        "https://dod.teams.microsoft.us/l/meetup-join/19%3ameeting_YmFy%40thread.v2/0",
        "teams",
        id="teams-dod",
    ),
    pytest.param(TEAMS_FOOTER_ONLY_HTML, None, None, id="neg-teams-footer-links-only"),
    pytest.param(
        "https://teams.microsoft.com/l/channel/19%3a4a95f7d8db4c4e7fae857bcebe0623e6%40thread.tacv2/General"
        "?groupId=e7b5f0e1-2f6c-4f4b-9a1e-2d8c6b1a3f00&tenantId=72f988bf-86f1-41af-91ab-2d7cd011db47",
        None,
        None,
        id="neg-teams-channel",
    ),
    pytest.param(
        "https://teams.microsoft.com/l/chat/0/0?users=jane.doe@contoso.com", None, None, id="neg-teams-chat"
    ),
    pytest.param("Get the app: https://teams.microsoft.com/downloads", None, None, id="neg-teams-download"),
    pytest.param(
        "https://teams.microsoft.com.evil.io/l/meetup-join/19%3ameeting_x%40thread.v2/0",
        None,
        None,
        id="neg-teams-lookalike",
    ),
    # ---- Webex ------------------------------------------------------------------------------------
    pytest.param(WEBEX_PLAIN_INVITE, WEBEX_URL, "webex", id="webex-plain-invitation"),
    pytest.param(
        WEBEX_HTML_INVITE,
        "https://acme.webex.com/acme/j.php?MTID=m0f1e2d3c4b5a69788796a5b4c3d2e1f0&from=outlook",
        "webex",
        id="webex-html-invitation",
    ),
    pytest.param(
        "https://acme.webex.com/wbxmw/j.php?MTID=m1234abcd&ED=123",
        "https://acme.webex.com/wbxmw/j.php?MTID=m1234abcd&ED=123",
        "webex",
        id="webex-wbxmw",
    ),
    pytest.param(
        "Webex: https://acme.webex.com/meet/jdoe",
        "https://acme.webex.com/meet/jdoe",
        "webex",
        id="webex-personal-room-location",
    ),
    pytest.param(
        "https://acme.my.webex.com/join/jdoe", "https://acme.my.webex.com/join/jdoe", "webex", id="webex-join"
    ),
    pytest.param(
        "https://acme.webex.com/wbxmjs/joinservice/sites/acme/meeting/download/5d8e0a9f?siteurl=acme&MTID=m5d8e",
        "https://acme.webex.com/wbxmjs/joinservice/sites/acme/meeting/download/5d8e0a9f?siteurl=acme&MTID=m5d8e",
        "webex",
        id="webex-joinservice",
    ),
    pytest.param("https://www.webex.com/pricing/index.html", None, None, id="neg-webex-marketing"),
    pytest.param("https://www.webex.com/meet/jdoe", None, None, id="neg-webex-www-host"),
    pytest.param(
        "https://help.webex.com/en-us/article/nqzbm0u/Join-a-Webex-meeting", None, None, id="neg-webex-help"
    ),
    pytest.param("https://acme.webex.com/acme/j.php", None, None, id="neg-webex-jphp-without-meeting"),
    pytest.param(
        "Dial 25501234567@acme.webex.com or sip:25501234567@acme.webex.com",
        None,
        None,
        id="neg-webex-video-dial",
    ),
    # ---- GoTo Meeting -----------------------------------------------------------------------------
    pytest.param(
        "https://global.gotomeeting.com/join/123456789",
        "https://global.gotomeeting.com/join/123456789",
        "gotomeeting",
        id="goto-global-join",
    ),
    pytest.param(
        GOTO_PLAIN_INVITE, "https://meet.goto.com/123456789", "gotomeeting", id="goto-plain-invitation"
    ),
    pytest.param(
        "meet.goto.com/acme-weekly", "https://meet.goto.com/acme-weekly", "gotomeeting", id="goto-named-room"
    ),
    pytest.param(
        "GoTo: https://gotomeet.me/JaneDoe",
        "https://gotomeet.me/JaneDoe",
        "gotomeeting",
        id="goto-gotomeet-me",
    ),
    pytest.param(
        "https://app.gotomeeting.com/?meetingId=123456789",
        "https://app.gotomeeting.com/?meetingId=123456789",
        "gotomeeting",
        id="goto-app",
    ),
    pytest.param(
        "https://app.gotomeeting.com/index.html?meetingId=987654321",
        "https://app.gotomeeting.com/index.html?meetingId=987654321",
        "gotomeeting",
        id="goto-app-index",
    ),
    pytest.param("https://app.gotomeeting.com/", None, None, id="neg-goto-app-without-id"),
    pytest.param("https://www.goto.com/meeting/pricing", None, None, id="neg-goto-marketing"),
    pytest.param("https://gotomeet.me", None, None, id="neg-gotomeet-me-home"),
    # ---- BlueJeans --------------------------------------------------------------------------------
    pytest.param(
        "https://bluejeans.com/123456789", "https://bluejeans.com/123456789", "bluejeans", id="bj-plain"
    ),
    pytest.param(
        "https://bluejeans.com/123456789/4321?src=calendarLink",
        "https://bluejeans.com/123456789/4321?src=calendarLink",
        "bluejeans",
        id="bj-passcode",
    ),
    pytest.param(
        "Browser: https://acme.bluejeans.com/123456789/webrtc",
        "https://acme.bluejeans.com/123456789/webrtc",
        "bluejeans",
        id="bj-subdomain",
    ),
    pytest.param(
        "BlueJeans: bluejeans.com/987654321",
        "https://bluejeans.com/987654321",
        "bluejeans",
        id="bj-location-schemeless",
    ),
    pytest.param("https://bluejeans.com", None, None, id="neg-bj-home"),
    pytest.param("https://www.bluejeans.com/pricing", None, None, id="neg-bj-pricing"),
    # ---- Whereby ----------------------------------------------------------------------------------
    pytest.param(
        "https://whereby.com/acme-standup", "https://whereby.com/acme-standup", "whereby", id="whereby-room"
    ),
    pytest.param(
        "https://acme.whereby.com/design-review?embed",
        "https://acme.whereby.com/design-review?embed",
        "whereby",
        id="whereby-subdomain",
    ),
    pytest.param(
        "Room: whereby.com/jane-doe.", "https://whereby.com/jane-doe", "whereby", id="whereby-schemeless"
    ),
    pytest.param("https://whereby.com", None, None, id="neg-whereby-home"),
    pytest.param("https://whereby.com/information/tos/", None, None, id="neg-whereby-information"),
    pytest.param("https://whereby.com/user", None, None, id="neg-whereby-user"),
    pytest.param("https://whereby.com/pricing", None, None, id="neg-whereby-pricing"),
    pytest.param("https://whereby.com.evil.net/room", None, None, id="neg-whereby-lookalike"),
    # ---- other sites and non-links ----------------------------------------------------------------
    pytest.param("Conference Room 4B (Building 92)", None, None, id="neg-room-name"),
    pytest.param("Microsoft Teams Meeting", None, None, id="neg-teams-location-without-link"),
    pytest.param(
        "Agenda: https://docs.google.com/document/d/1AbCdEf/edit?usp=sharing", None, None, id="neg-google-doc"
    ),
    pytest.param("https://example.com/meeting/123456789", None, None, id="neg-other-site"),
    pytest.param(f"<!-- {ZOOM_URL} --><p>No link here</p>", None, None, id="neg-link-in-html-comment"),
]


@pytest.mark.parametrize(("text", "url", "platform"), CASES)
def test_find_in_text(text: str, url: str | None, platform: str | None) -> None:
    link = find_in_text(text)
    if url is None:
        assert link is None
    else:
        assert link == MeetingLink(url=url, platform=platform)


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 70
    assert len({case.id for case in CASES}) == len(CASES)


# --- match_url / unwrap_url -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("candidate", "expected"),
    [
        ("  <https://zoom.us/j/123?pwd=abc>  ", MeetingLink("https://zoom.us/j/123?pwd=abc", "zoom")),
        (
            "//meet.google.com/abc-defg-hij",
            MeetingLink("https://meet.google.com/abc-defg-hij", "google_meet"),
        ),
        ("https://user:secret@zoom.us/j/1", MeetingLink("https://zoom.us/j/1", "zoom")),
        ("https://zoom.us/j/1?pwd=a&amp;uname=b", MeetingLink("https://zoom.us/j/1?pwd=a&uname=b", "zoom")),
        ("https://zoom.us/j/1 2", None),  # whitespace inside is not one URL
        ("mailto:jane@zoom.us", None),
        ("tel:+16465588656", None),
        ("ftp://zoom.us/j/1", None),
        ("https://zoom.us:notaport/j/1", None),
        ("", None),
    ],
)
def test_match_url(candidate: str, expected: MeetingLink | None) -> None:
    assert match_url(candidate) == expected


def test_unwrap_safelinks() -> None:
    assert unwrap_url(safelink(ZOOM_URL).replace("&amp;", "&")) == ZOOM_URL


def test_unwrap_google_redirect() -> None:
    assert unwrap_url(google_redirect(ZOOM_URL).replace("&amp;", "&")) == ZOOM_URL


def test_unwrap_nested_and_gov_cloud() -> None:
    inner = google_redirect(TEAMS_URL).replace("&amp;", "&")
    outer = (
        safelink(inner)
        .replace("&amp;", "&")
        .replace("nam12.safelinks.protection.outlook.com", "gcc.safelinks.protection.office365.us")
    )
    assert unwrap_url(outer) == TEAMS_URL
    link = match_url(outer)
    assert link == MeetingLink(TEAMS_URL, "teams")


@pytest.mark.parametrize(
    "url",
    [
        ZOOM_URL,
        "https://nam12.safelinks.protection.outlook.com/?data=05%7C02",  # no url= parameter
        "https://evil.com/url?q=https://zoom.us/j/1",  # only Google's own redirector is unwrapped
        "https://www.google.com/search?q=https://zoom.us/j/1",
        "https://safelinks.protection.outlook.com.evil.com/?url=https%3A%2F%2Fzoom.us%2Fj%2F1",
    ],
)
def test_unwrap_leaves_other_urls_alone(url: str) -> None:
    assert unwrap_url(url) == url


def test_unwrap_stops_on_redirect_loop() -> None:
    looping = "https://www.google.com/url?q=https://www.google.com/url?q%3Dhttps://www.google.com/url"
    assert unwrap_url(looping).startswith("https://www.google.com/url")


def test_meeting_link_is_frozen() -> None:
    link = MeetingLink("https://zoom.us/j/1", "zoom")
    with pytest.raises(dataclasses.FrozenInstanceError):
        link.url = "https://evil.com"  # type: ignore[misc]


# --- lookup order -----------------------------------------------------------------------------------


def test_structured_beats_location_and_body() -> None:
    link = find_meeting_link(
        structured=[None, TEAMS_URL],
        location=["Zoom: https://acme.zoom.us/j/123"],
        body=f"Join {MEET_URL}",
    )
    assert link == MeetingLink(TEAMS_URL, "teams")


def test_location_beats_body() -> None:
    link = find_meeting_link(
        structured=["", None, "https://zoom.us/pricing"],  # unusable structured values fall through
        location=["Room 4B", "Zoom: https://acme.zoom.us/j/123?pwd=abc"],
        body=f"Join {MEET_URL}",
    )
    assert link == MeetingLink("https://acme.zoom.us/j/123?pwd=abc", "zoom")


def test_body_used_last() -> None:
    link = find_meeting_link(location=["Room 4B"], body=f"Join {MEET_URL}")
    assert link == MeetingLink(MEET_URL, "google_meet")


def test_first_link_in_body_wins() -> None:
    body = f"Primary: {ZOOM_URL}\nBackup: {TEAMS_URL}\nFallback: {MEET_URL}"
    assert find_in_text(body) == MeetingLink(ZOOM_URL, "zoom")
    reordered = f"Primary: {MEET_URL}\nBackup: {ZOOM_URL}"
    assert find_in_text(reordered) == MeetingLink(MEET_URL, "google_meet")


def test_non_meeting_links_are_skipped_not_fatal() -> None:
    body = "Download https://zoom.us/download then join https://whereby.com/acme-standup"
    assert find_in_text(body) == MeetingLink("https://whereby.com/acme-standup", "whereby")


def test_href_comes_before_its_anchor_text() -> None:
    html_body = f'<p>Join: <a href="{TEAMS_URL}">{ZOOM_URL}</a></p>'
    assert find_in_text(html_body) == MeetingLink(TEAMS_URL, "teams")


def test_structured_value_with_surrounding_text_is_scanned() -> None:
    link = find_meeting_link(structured=[f"Join at {MEET_URL} please"])
    assert link == MeetingLink(MEET_URL, "google_meet")


# --- raw provider payloads --------------------------------------------------------------------------

GRAPH_TEAMS_EVENT = {
    "@odata.etag": 'W/"ZlnW4RIAV06KYYwlrfNZvQAAKGWwbw=="',
    "id": "AAMkAGI2TG93AAA=",
    "createdDateTime": "2024-05-01T18:27:26.1234567Z",
    "subject": "Quarterly planning",
    "bodyPreview": "Microsoft Teams meeting\r\nJoin on your computer, mobile app or room device\r\n",
    "body": {"contentType": "html", "content": teams_invitation_html(TEAMS_URL)},
    "start": {"dateTime": "2024-05-14T16:00:00.0000000", "timeZone": "UTC"},
    "end": {"dateTime": "2024-05-14T17:00:00.0000000", "timeZone": "UTC"},
    "location": {
        "displayName": "Microsoft Teams Meeting",
        "locationType": "default",
        "uniqueId": "Microsoft Teams Meeting",
        "uniqueIdType": "private",
    },
    "locations": [
        {"displayName": "Microsoft Teams Meeting", "locationType": "default", "uniqueIdType": "unknown"}
    ],
    "isOnlineMeeting": True,
    "onlineMeetingProvider": "teamsForBusiness",
    "onlineMeetingUrl": None,
    "onlineMeeting": {
        "joinUrl": TEAMS_MEET_URL,
        "conferenceId": "234567890",
        "tollNumber": "+1 425-555-0100",
    },
    "organizer": {"emailAddress": {"name": "Jane Doe", "address": "jane.doe@contoso.com"}},
}

GRAPH_ZOOM_BODY_EVENT = {
    "id": "AAMkAGI2TG94AAA=",
    "subject": "Customer call",
    "bodyPreview": "Hi team,\r\nJoin Zoom Meeting\r\nhttps://us02web.zoom.us/j/855...",
    "body": {"contentType": "html", "content": ZOOM_OUTLOOK_SAFELINKS_HTML},
    "location": {"displayName": "", "locationType": "default", "uniqueIdType": "unknown"},
    "locations": [],
    "isOnlineMeeting": False,
    "onlineMeetingProvider": "unknown",
    "onlineMeetingUrl": None,
    "onlineMeeting": None,
}


def test_graph_event_uses_online_meeting_join_url() -> None:
    # joinUrl (new /meet/ form) wins over the /l/meetup-join/ link in the body.
    assert from_graph_event(GRAPH_TEAMS_EVENT) == MeetingLink(TEAMS_MEET_URL, "teams")


def test_graph_event_legacy_online_meeting_url() -> None:
    event = {**GRAPH_TEAMS_EVENT, "onlineMeeting": None, "onlineMeetingUrl": TEAMS_URL}
    assert from_graph_event(event) == MeetingLink(TEAMS_URL, "teams")


def test_graph_event_with_only_a_body_link() -> None:
    assert from_graph_event(GRAPH_ZOOM_BODY_EVENT) == MeetingLink(ZOOM_URL, "zoom")


def test_graph_event_location_beats_body() -> None:
    event = {
        **GRAPH_ZOOM_BODY_EVENT,
        "location": {"displayName": "Room 4B; Whereby", "locationType": "default"},
        "locations": [
            {"displayName": "Room 4B", "locationType": "conferenceRoom"},
            {"displayName": "https://whereby.com/acme-standup", "locationType": "default"},
        ],
    }
    assert from_graph_event(event) == MeetingLink("https://whereby.com/acme-standup", "whereby")


def test_graph_event_location_uri() -> None:
    event = {
        **GRAPH_ZOOM_BODY_EVENT,
        "location": {"displayName": "Webex", "locationUri": "https://acme.webex.com/meet/jdoe"},
    }
    assert from_graph_event(event) == MeetingLink("https://acme.webex.com/meet/jdoe", "webex")


def test_graph_event_falls_back_to_body_preview() -> None:
    event = {
        "subject": "Sync",
        "body": {"contentType": "html", "content": ""},
        "bodyPreview": "Join: https://bluejeans.com/123456789/4321 (passcode 4321)",
    }
    assert from_graph_event(event) == MeetingLink("https://bluejeans.com/123456789/4321", "bluejeans")


def test_graph_event_text_body() -> None:
    event = {"body": {"contentType": "text", "content": TEAMS_PLAIN_TEXT}, "onlineMeeting": None}
    assert from_graph_event(event) == MeetingLink(TEAMS_URL, "teams")


def test_graph_event_without_any_link() -> None:
    event = {
        "subject": "Lunch",
        "body": {"contentType": "html", "content": "<p>Pizza at noon</p>"},
        "location": {"displayName": "Cafeteria"},
        "locations": None,
        "onlineMeeting": None,
    }
    assert from_graph_event(event) is None


GOOGLE_MEET_EVENT = {
    "kind": "calendar#event",
    "id": "5q3f9k2m8c1b0a7d6e4g",
    "status": "confirmed",
    "summary": "Design review",
    "description": "Agenda: https://docs.google.com/document/d/1AbCdEf/edit",
    "location": "",
    "hangoutLink": MEET_URL,
    "conferenceData": {
        "entryPoints": [
            {
                "entryPointType": "phone",
                "uri": "tel:+1-617-675-4444",
                "label": "+1 617-675-4444",
                "pin": "1234567890123",
            },
            {"entryPointType": "video", "uri": MEET_URL, "label": "meet.google.com/qwe-rtyu-iop"},
            {
                "entryPointType": "more",
                "uri": "https://tel.meet/qwe-rtyu-iop?pin=1234567890123",
                "pin": "1234567890123",
            },
        ],
        "conferenceSolution": {"key": {"type": "hangoutsMeet"}, "name": "Google Meet"},
        "conferenceId": "qwe-rtyu-iop",
    },
}


def test_google_event_with_conference_data() -> None:
    assert from_google_event(GOOGLE_MEET_EVENT) == MeetingLink(MEET_URL, "google_meet")


def test_google_event_with_zoom_add_on_conference_data() -> None:
    event = {
        "summary": "Partner sync",
        "description": f"Meet on {MEET_URL} if Zoom fails",
        "conferenceData": {
            "entryPoints": [
                {"entryPointType": "video", "uri": ZOOM_URL, "label": "us02web.zoom.us/j/85512345678"},
                {"entryPointType": "phone", "uri": "tel:+16465588656,,85512345678#"},
            ],
            "conferenceSolution": {"key": {"type": "addOn"}, "name": "Zoom Meeting"},
        },
    }
    assert from_google_event(event) == MeetingLink(ZOOM_URL, "zoom")


def test_google_event_with_only_hangout_link() -> None:
    event = {"summary": "1:1", "hangoutLink": "https://meet.google.com/abc-defg-hij", "description": ""}
    assert from_google_event(event) == MeetingLink("https://meet.google.com/abc-defg-hij", "google_meet")


def test_google_event_with_zoom_link_in_description() -> None:
    event = {"summary": "Quarterly review", "location": "HQ", "description": GOOGLE_DESCRIPTION_ZOOM_HTML}
    assert from_google_event(event) == MeetingLink(ZOOM_URL, "zoom")


def test_google_event_location_beats_description() -> None:
    event = {"location": f"Teams: {TEAMS_URL}", "description": ZOOM_PLAIN_INVITE}
    assert from_google_event(event) == MeetingLink(TEAMS_URL, "teams")


def test_google_event_ignores_phone_entry_points() -> None:
    event = {"conferenceData": {"entryPoints": [{"entryPointType": "phone", "uri": "tel:+1-617-675-4444"}]}}
    assert from_google_event(event) is None


# --- empty / missing input --------------------------------------------------------------------------


@pytest.mark.parametrize("text", [None, "", "   ", "\n\t", "<p>&nbsp;</p>"])
def test_find_in_text_empty(text: str | None) -> None:
    assert find_in_text(text) is None


def test_find_meeting_link_empty() -> None:
    assert find_meeting_link() is None
    assert find_meeting_link(structured=[None, ""], location=[None, ""], body=None) is None


def test_match_and_unwrap_empty() -> None:
    assert match_url("") is None
    assert match_url("   ") is None
    assert unwrap_url("") == ""


@pytest.mark.parametrize(
    "event", [{}, {"onlineMeeting": None, "body": None, "location": None, "locations": None}]
)
def test_graph_event_empty(event: dict) -> None:
    assert from_graph_event(event) is None


@pytest.mark.parametrize("event", [{}, {"conferenceData": None, "hangoutLink": None, "description": None}])
def test_google_event_empty(event: dict) -> None:
    assert from_google_event(event) is None
