"""Generate the PDF documents of the demo knowledge base in docs_corpus/.

Run from the repository root: ``.venv/bin/python tools/make_pdf.py``. Each document is written
below in a tiny markup ("# " title, "## " and "### " headings, "- " bullets with two-space
continuation lines, "| a | b |" table rows whose first row is the header, blank lines between
blocks). The PDFs use fpdf2's core fonts, so all text must be latin-1 safe: write "EUR", not the
euro sign. Output is deterministic because the creation date is fixed.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fpdf import FPDF

CORPUS = Path(__file__).resolve().parent.parent / "docs_corpus"
FIXED_DATE = datetime(2025, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class PdfDoc:
    """One PDF document: its path under docs_corpus/, metadata and markup source."""

    path: str
    title: str
    author: str
    source: str


EXPENSE_POLICY = PdfDoc(
    path="policies/expense-and-travel-policy.pdf",
    title="Expense and Travel Policy",
    author="Pieter de Graaf, CFO",
    source="""\
# Expense and Travel Policy

Kestrel Ledger B.V. and Kestrel Ledger Portugal, Unipessoal Lda.

Policy owner: Pieter de Graaf, Chief Financial Officer. Administered by: Marloes Kuipers,
Finance Manager. Version 5.0, effective 1 January 2025. All amounts are in euros (EUR) and
include VAT unless stated otherwise.

## 1. Purpose and principles

This policy explains which business costs Kestrel pays for, how to book travel, and how to
get your money back when you have paid something yourself. It is written to be simple to
follow. Three principles sit behind every rule:

- Spend Kestrel's money as if it were your own: choose the sensible option, not the cheapest
  possible or the most comfortable one.
- Be transparent: every expense has a receipt, a business reason and an approver.
- Ask before, not after: if you are unsure whether something is covered, ask Finance in
  #finance-help before you spend.

## 2. Scope

The policy applies to all employees, interns and contractors whose contract says that
Kestrel reimburses their expenses. It covers business travel, meals during travel, client
entertainment, team events and small purchases. Equipment for working from home is covered
by the home office allowance in the Employee Handbook, and laptops, monitors and other IT
hardware for the office are ordered through IT, not expensed. Commuting to your own office
is covered by the commuting arrangement in your employment contract, not by this policy.

## 3. Approval limits

Every expense needs approval by someone other than the person who spent the money. Approval
happens in Pleo, our expense tool, and depends on the amount of the individual expense or,
for trips, the total estimated cost of the trip:

| Amount | Approver |
| Up to EUR 500 | Your line manager |
| EUR 500.01 to EUR 2,500 | Your department head (VP or Head of) |
| Above EUR 2,500 | The CFO, Pieter de Graaf |

Pre-approval is required for every trip that includes a flight or an overnight stay, and for
any single purchase above EUR 250 that is not part of an approved budget. Request pre-
approval in Pleo under Trips, before you book. Approvers respond within two working days.
Managers cannot approve their own expenses; these go to their own manager.

## 4. Submitting expenses

- Submit every expense in Pleo within 30 days of the date it was incurred, with a photo of
  the receipt and a short business reason (for example 'Train to Brussels, customer visit
  Acme Logistics').
- Expenses approved by the 20th of a month are reimbursed with that month's payroll. Later
  approvals are paid the month after.
- Expenses submitted more than 90 days after they were incurred are not reimbursed, except
  in exceptional circumstances approved by the CFO.
- Use the right category in Pleo. Finance uses categories for VAT recovery, and a wrong
  category can cost us money.
- Finance keeps expense claims and receipts for 7 years, as required for tax purposes. You
  do not need to keep paper receipts once the photo is in Pleo.

### Company cards

Employees who travel more than four times a year, and team leads who organise events, can
request a Pleo company card from Finance. The standard card limit is EUR 3,000 per month.
Card payments still need a receipt and a business reason in Pleo within 30 days; card
holders who repeatedly miss receipts lose the card. Never use a company card for private
purchases, not even if you intend to pay it back.

## 5. Booking travel

Book flights, trains and hotels through TravelPerk, which is connected to Pleo and our
travel insurance. Bookings outside TravelPerk are only reimbursed when TravelPerk could not
offer a comparable option, and you must explain why in Pleo.

- Book flights at least 14 days before departure. Late bookings cost on average 40% more; if
  a trip is planned later than that, say why in the pre-approval request.
- Take the train when the journey takes less than 5 hours door to door. From Utrecht this
  includes Amsterdam, Brussels, Paris, Cologne, Frankfurt and Dusseldorf.
- Economy class for flights shorter than 6 hours. For flights of 6 hours or longer, premium
  economy is allowed. Business class is not reimbursed, except with prior approval from the
  CFO for medical reasons.
- Trains: second class within the Netherlands and Belgium, first class allowed for
  international journeys of more than 3 hours.
- Choose refundable or changeable fares only when plans are genuinely uncertain.
- Loyalty points collected on business travel may be kept, but must never influence the
  choice of airline or hotel.

Travel between the Utrecht and Lisbon offices is common. TravelPerk shows a pre-negotiated
fare for the Amsterdam-Lisbon route; use it when the times work.

## 6. Accommodation

Book a standard room in a business hotel within reasonable distance of where you need to be.
The following maximum rates per night apply, including breakfast where offered, excluding
city tax:

| City | Maximum per night |
| Amsterdam | EUR 220 |
| Utrecht | EUR 160 |
| Lisbon | EUR 160 |
| Porto | EUR 130 |
| Brussels | EUR 180 |
| Berlin | EUR 170 |
| Munich | EUR 190 |
| Paris | EUR 230 |
| London | EUR 250 |
| New York | EUR 300 |
| Other cities in Europe | EUR 150 |

For destinations outside Europe that are not listed, agree the maximum rate with Finance
before booking. During large trade fairs, prices can exceed these limits; mention the event
in Pleo and book early. Staying with friends or family instead of in a hotel is welcome, but
Kestrel does not pay a fee for it.

## 7. Meals during travel (per diem)

On business trips with an overnight stay, you receive a daily allowance (per diem) for meals
and small incidental costs such as tips and snacks, instead of reimbursement of individual
meal receipts. You do not need to submit receipts for meals. The per diem depends on the
country where you spend the night:

| Country or city | Per diem per full day |
| Netherlands | EUR 45 |
| Portugal | EUR 40 |
| Belgium | EUR 50 |
| Germany | EUR 55 |
| France | EUR 55 |
| United Kingdom | EUR 65 |
| United States (except New York) | EUR 80 |
| New York | EUR 95 |

- On the day you travel out and the day you travel back, you receive 75% of the per diem.
- When a meal is provided (for example by a conference or a customer), the per diem for that
  day is reduced by 20% for breakfast, 30% for lunch and 40% for dinner. Breakfast included
  in the hotel rate does not count as provided.
- Day trips without an overnight stay do not qualify for per diem. If a day trip lasts more
  than 10 hours, you may claim one meal up to EUR 25 with a receipt.
- Per diem for countries not in the table is set by Finance when you request pre-approval.

## 8. Local transport

- Use public transport where it is practical. Public transport tickets are reimbursed in
  full.
- Taxis and ride-hailing services are reimbursed when public transport is not available,
  after 22:00, when you carry heavy equipment, or when you travel with a customer.
- Use of your private car for business trips is reimbursed at EUR 0.23 per km, the Dutch
  tax-free rate, based on the shortest reasonable route. Tolls are reimbursed with a
  receipt.
- Rental cars need pre-approval. Book the smallest category that fits the purpose through
  TravelPerk, and decline extra insurance offered at the counter: it is included in our
  travel insurance.

## 9. Client entertainment and business meals

Meals with customers, prospects and partners are reimbursed when they have a clear business
purpose. The limit is EUR 90 per person, including drinks, tips and service. In Pleo, list
the names and companies of all attendees. Alcohol is only reimbursed as part of client
entertainment and in moderation. Meals where only Kestrel employees are present are not
client entertainment; see team events below.

Gifts to customers or partners are limited to EUR 50 per person per year and need approval
from your department head. Never give cash or cash equivalents such as gift cards.

## 10. Team events

Each team has a social budget of EUR 40 per person per quarter for team activities, such as
a dinner or an outing. The team lead pays with a company card or submits the expense and
lists the participants. Unused budget does not carry over to the next quarter. Offsites with
overnight stays are planned with Finance and need department head approval in advance.

## 11. Office visits and team days

Colleagues who live more than 50 km from an office, or who were hired into a fully remote
role, visit an office at least once a quarter for team days (see the Employee Handbook). These
trips are business travel under this policy, with a few simplifications:

- Pre-approval is given once per year for four office visits; you do not need to request each
  trip separately, as long as each visit costs less than EUR 900 in total.
- Book travel and hotels through TravelPerk as usual. If you stay more than three nights, you
  may choose a serviced apartment instead of a hotel, within the same nightly maximum.
- Per diem applies from the first night, as for any other trip.
- Travel to the office you are contractually assigned to, when you live within 50 km of it, is
  commuting and is not covered here.

Team days are planned by the team lead at least four weeks in advance, so that everyone can
book at normal fares. If a team day is cancelled at short notice, Kestrel pays the
non-refundable costs of the bookings already made.

## 12. Conferences and training

Conference tickets, course fees and certification exams are paid from your personal learning
budget, as described in the Employee Handbook. Travel, accommodation and per diem for
conferences follow this policy and are not charged to the learning budget. Conference
tickets above EUR 1,000 need approval from your department head, in addition to your
manager's agreement on the learning budget. If you speak at a conference, the organiser's
reimbursement, if any, is deducted from what Kestrel pays.

## 13. Costs that are not reimbursed

- Traffic fines and penalties of any kind.
- Upgrades of flights, trains, hotel rooms or rental cars, and airline lounge access.
- Minibar, room service beyond the per diem, and in-room entertainment.
- Laundry, except on trips of 5 nights or longer.
- Personal travel insurance: Kestrel's business travel insurance already covers you.
- Costs for people travelling with you who are not on Kestrel business.
- Membership fees of loyalty programmes.

## 14. Travel insurance and safety

All business trips booked in line with this policy are covered by Kestrel's business travel
insurance, including medical costs abroad, cancellation and lost luggage. The insurance card
and the 24/7 assistance number are in HiBob under Documents. Before travelling outside the
EU, check the travel advice of the Dutch or Portuguese government and tell your manager
where you will be. In an emergency, call the assistance number first; they can arrange and
pay for medical care directly.

## 15. Visas and travel documents

You are responsible for having a valid passport or identity card for every business trip.
Costs of a visa, an electronic travel authorisation or vaccinations required for a business trip
are reimbursed; the cost of renewing your passport or identity card is not. For trips to the
United States, apply for the electronic travel authorisation at least three weeks before
departure. When a customer or partner asks you to sign documents on Kestrel's behalf abroad,
check with Legal (Elif Aydin) before you travel. Never carry printed customer data on a trip;
everything you need is available through your managed laptop.

## 16. Foreign currencies

Expenses paid in another currency are converted automatically in Pleo. Card payments use the
rate charged by the card; out-of-pocket expenses use the European Central Bank reference
rate on the day of the expense. Foreign transaction fees charged to your personal card for
business expenses are reimbursed when you submit the bank statement line.

## 17. Missing receipts

Sometimes a receipt is lost or was never issued. In that case, fill in the missing-receipt
declaration in Pleo, stating the date, amount, supplier and business reason. A missing-
receipt declaration is accepted for expenses up to EUR 75 per item, and at most three times
per calendar year per person. Above that amount, or after the third time, the expense can
only be reimbursed with a duplicate receipt from the supplier or a bank statement together
with written approval from the CFO. Per diem claims do not need receipts and do not count
towards this limit.

## 18. Misuse

Submitting false or inflated expenses is fraud. Finance checks a random sample of claims
every month, and all claims above EUR 1,000. Honest mistakes are simply corrected;
deliberate misuse leads to disciplinary measures in line with the Employee Handbook and,
where appropriate, to recovery of the amounts.

## 19. Questions and contacts

Questions about this policy: #finance-help in Slack or finance@kestrelledger.com. Marloes
Kuipers (Finance Manager) handles expense questions and Pleo cards. Exceptions to this
policy need written approval from the CFO, Pieter de Graaf.
""",
)

PARENTAL_LEAVE = PdfDoc(
    path="hr/parental-leave-guide.pdf",
    title="Parental Leave Guide",
    author="Sofia Marques, Head of People",
    source="""\
# Parental Leave Guide

Owner: Sofia Marques, Head of People. Version 3, effective 1 March 2024. Applies to
employees of Kestrel Ledger B.V. (Netherlands) and Kestrel Ledger Portugal. Employees hired
through our employer-of-record partner receive the statutory leave of their country plus the
Kestrel top-ups described in section 4, where the local rules allow it.

Becoming a parent is a big moment, whether your child is born, adopted or placed with you as
a foster child. This guide explains the leave you are entitled to, what Kestrel adds on top
of the law, and the practical steps before and after. The law sets the minimum; Kestrel adds
to it so that money is not the reason to take less time with your family.

## 1. Before the leave: what to do when

| When | What |
| As soon as you feel comfortable | Tell your manager and the People team. |
| At least 3 months before the expected date | Register the date in HiBob, plan with People. |
| 4 to 6 weeks before the due date (NL) | Pregnancy leave starts; you pick the start date. |
| Within 2 weeks after birth or adoption | Send the certificate to People to request benefits. |

Your People Partner handles the application for benefits from UWV (Netherlands) or Seguranca
Social (Portugal) together with you, and makes sure Kestrel's top-up is paid with payroll.

## 2. Netherlands

### Pregnancy and maternity leave

The birth parent is entitled to at least 16 weeks of pregnancy and maternity leave. It
starts 4 to 6 weeks before the expected due date. UWV pays a benefit of up to the maximum
daily wage; Kestrel tops this up to 100% of your pay for the full 16 weeks. If the baby is
born later than expected, the leave after birth is not shortened.

### Partner leave

The partner of the birth parent (regardless of gender), including the person who legally
recognises the child, is entitled to:

- Birth leave of once the weekly working hours (one week for a full-time employee), fully
  paid by Kestrel, to be taken within 4 weeks after the birth.
- Additional birth leave of up to 5 times the weekly working hours, to be taken within 6
  months after the birth. UWV pays 70% of the daily wage; Kestrel tops it up to 100%.

Together this gives partners 6 weeks of leave at full pay in the first six months.

### Parental leave (ouderschapsverlof)

Every parent can take parental leave of 26 times the weekly working hours until the child
turns 8. The first 9 weeks are partly paid by UWV (70% of the daily wage, up to a maximum)
if taken in the child's first year. Kestrel tops up these 9 weeks to 90% of your pay. The
remaining 17 weeks are unpaid. Parental leave can be taken in blocks or as reduced hours, in
agreement with your manager.

### Adoption and foster care leave

Each adoptive or foster parent is entitled to 6 weeks of leave, to be taken within 26 weeks
of the child joining the family. UWV pays a benefit; Kestrel tops it up to 100% of your pay.

## 3. Portugal

In Portugal, parents share the initial parental leave of 120 or 150 consecutive days, as set
out in the Portuguese Labour Code, with extensions when both parents share the leave. The
father or second parent must take 28 working days of exclusive leave within the first 42
days after the birth, 7 of them immediately after the birth. Seguranca Social pays the
benefit; Kestrel tops it up to 100% of your pay for the initial parental leave and the
exclusive leave.

## 4. What Kestrel adds on top of the law

- Top-ups to 100% of pay for pregnancy and maternity leave, partner leave, adoption and
  foster care leave, and the Portuguese initial parental leave.
- A top-up to 90% of pay for the first 9 weeks of Dutch parental leave.
- 10 extra working days of fully paid leave for every parent, in both countries, to be taken
  within the child's first year.
- Up to 10 paid keep-in-touch days during your leave, if you want them, for example to join
  a team offsite or a planning session. They are voluntary and do not shorten your leave.
- A phased return: during the first 4 weeks after a leave of at least 6 weeks, you work 80%
  of your normal hours at 100% pay.

## 5. During your leave

- You keep building up vacation days during all forms of leave described here.
- Your laptop and accounts stay active. You are not expected to read Slack or email.
- Performance conversations that fall in your leave are moved to after your return. Being on
  leave never counts against you in promotion decisions.

## 6. Coming back

- Your manager and People Partner plan a return conversation in the week before you come
  back.
- Engineers are not scheduled for on-call in the first 3 months after returning from a leave
  of 6 weeks or longer, unless they ask to be.
- Nursing breaks are paid working time, up to a quarter of your working hours during the
  first 9 months after the birth. There is a private nursing room in both offices (Utrecht:
  room 1.12; Lisbon: next to reception); book it in Google Calendar.
- If you would like to work fewer hours permanently after your leave, discuss it with your
  manager; we support it wherever the role allows.

## 7. Contacts

People Partners: Noor Haddad (Engineering), Ines Rocha (Commercial and Support). Head of
People: Sofia Marques. Email: people@kestrelledger.com, or ask in #people-help if your
question is not private.
""",
)

DOCS = [EXPENSE_POLICY, PARENTAL_LEAVE]

Block = tuple[str, list[str]]


def parse(source: str) -> list[Block]:
    """Split markup into (kind, lines) blocks; kinds are h1, h2, h3, p, ul and table."""
    blocks: list[Block] = []
    for chunk in source.strip().split("\n\n"):
        lines = chunk.splitlines()
        first = lines[0]
        if first.startswith("#"):
            level, _, text = first.partition(" ")
            blocks.append((f"h{len(level)}", [text]))
        elif first.startswith("| "):
            blocks.append(("table", lines))
        elif first.startswith("- "):
            items: list[str] = []
            for line in lines:
                if line.startswith("- "):
                    items.append(line[2:])
                else:
                    items[-1] += " " + line.strip()
            blocks.append(("ul", items))
        else:
            blocks.append(("p", [" ".join(line.strip() for line in lines)]))
    return blocks


class HandbookPdf(FPDF):
    """FPDF with a running header and a page-numbered footer in the handbook's style."""

    def __init__(self, title: str) -> None:
        super().__init__(format="A4")
        self.doc_title = title
        self.set_margins(20, 20, 20)
        self.set_auto_page_break(auto=True, margin=20)

    def header(self) -> None:
        """Print the company name and document title on every page but the first."""
        if self.page_no() == 1:
            return
        self.set_font("Helvetica", "I", 8)
        self.cell(0, 6, f"Kestrel Ledger - {self.doc_title}", new_x="LMARGIN", new_y="NEXT")
        self.ln(2)

    def footer(self) -> None:
        """Print the classification and page number at the bottom of every page."""
        self.set_y(-15)
        self.set_font("Helvetica", "I", 8)
        self.cell(0, 10, f"Internal - page {self.page_no()}", align="C")


def render(doc: PdfDoc, out_dir: Path) -> Path:
    """Render one document into out_dir and return the path written."""
    doc.source.encode("latin-1")  # core fonts only: fail loudly on anything else
    pdf = HandbookPdf(doc.title)
    pdf.set_title(doc.title)
    pdf.set_author(doc.author)
    pdf.set_creator("tools/make_pdf.py")
    pdf.set_creation_date(FIXED_DATE)
    pdf.add_page()
    sizes = {"h1": 18, "h2": 13, "h3": 11}
    for kind, lines in parse(doc.source):
        if kind in sizes:
            pdf.ln(0 if kind == "h1" else 3)
            pdf.set_font("Helvetica", "B", sizes[kind])
            pdf.multi_cell(0, sizes[kind] * 0.5, lines[0], new_x="LMARGIN", new_y="NEXT")
            pdf.ln(1)
            continue
        pdf.set_font("Helvetica", "", 10)
        if kind == "p":
            pdf.multi_cell(0, 5, lines[0], new_x="LMARGIN", new_y="NEXT")
            pdf.ln(2)
        elif kind == "ul":
            for item in lines:
                pdf.set_x(pdf.l_margin + 4)
                pdf.multi_cell(0, 5, "- " + item, new_x="LMARGIN", new_y="NEXT")
                pdf.ln(1)
            pdf.ln(1)
        else:
            with pdf.table(text_align="LEFT", line_height=5) as table:
                for line in lines:
                    row = table.row()
                    for cell in line.strip().strip("|").split("|"):
                        row.cell(cell.strip())
            pdf.ln(3)
    target = out_dir / doc.path
    target.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(target))
    return target


def main() -> None:
    """Write every PDF of the demo corpus."""
    parser = argparse.ArgumentParser(description="Generate the PDFs of docs_corpus/.")
    parser.add_argument("--out", type=Path, default=CORPUS, help="corpus root directory")
    args = parser.parse_args()
    for doc in DOCS:
        print(render(doc, args.out))


if __name__ == "__main__":
    main()
