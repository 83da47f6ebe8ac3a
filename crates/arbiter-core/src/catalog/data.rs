//! The built-in framework catalog's data: control ids and their official titles.
//! Sources: OWASP Non-Human Identities Top 10 (2025 edition), OWASP Top 10 for Agentic
//! Applications (2026 edition, published December 2025 by the OWASP GenAI Security
//! Project), NIST Cybersecurity Framework 2.0 (CSWP 29, February 2024, core as exported by
//! the CSF 2.0 Reference Tool), and NIST CSF 1.1 (April 2018) with the 1.1 -> 2.0 lineage
//! taken from the "[Withdrawn: Moved to / Incorporated into ...]" markers of the CSF 2.0 core.

/// OWASP Non-Human Identities Top 10 (2025): ids `NHI1`..`NHI10`.
pub(crate) static OWASP_NHI: &[(&str, &str)] = &[
    ("NHI1", "Improper Offboarding"),
    ("NHI2", "Secret Leakage"),
    ("NHI3", "Vulnerable Third-Party NHI"),
    ("NHI4", "Insecure Authentication"),
    ("NHI5", "Overprivileged NHI"),
    ("NHI6", "Insecure Cloud Deployment Configurations"),
    ("NHI7", "Long-Lived Secrets"),
    ("NHI8", "Environment Isolation"),
    ("NHI9", "NHI Reuse"),
    ("NHI10", "Human Use of NHI"),
];

/// OWASP Top 10 for Agentic Applications (2026): ids `ASI01`..`ASI10`.
pub(crate) static OWASP_ASI: &[(&str, &str)] = &[
    ("ASI01", "Agent Goal Hijack"),
    ("ASI02", "Tool Misuse and Exploitation"),
    ("ASI03", "Identity and Privilege Abuse"),
    ("ASI04", "Agentic Supply Chain Vulnerabilities"),
    ("ASI05", "Unexpected Code Execution (RCE)"),
    ("ASI06", "Memory & Context Poisoning"),
    ("ASI07", "Insecure Inter-Agent Communication"),
    ("ASI08", "Cascading Failures"),
    ("ASI09", "Human-Agent Trust Exploitation"),
    ("ASI10", "Rogue Agents"),
];

/// NIST Cybersecurity Framework 2.0: every subcategory id (e.g. `GV.OC-01`, `PR.AA-05`,
/// `DE.CM-01`), with its text as title.
pub(crate) static NIST_CSF_2: &[(&str, &str)] = &[
    // GOVERN (GV) - Organizational Context (GV.OC)
    (
        "GV.OC-01",
        "The organizational mission is understood and informs cybersecurity risk management",
    ),
    (
        "GV.OC-02",
        "Internal and external stakeholders are understood, and their needs and expectations regarding cybersecurity risk management are understood and considered",
    ),
    (
        "GV.OC-03",
        "Legal, regulatory, and contractual requirements regarding cybersecurity - including privacy and civil liberties obligations - are understood and managed",
    ),
    (
        "GV.OC-04",
        "Critical objectives, capabilities, and services that external stakeholders depend on or expect from the organization are understood and communicated",
    ),
    (
        "GV.OC-05",
        "Outcomes, capabilities, and services that the organization depends on are understood and communicated",
    ),
    // Risk Management Strategy (GV.RM)
    (
        "GV.RM-01",
        "Risk management objectives are established and agreed to by organizational stakeholders",
    ),
    (
        "GV.RM-02",
        "Risk appetite and risk tolerance statements are established, communicated, and maintained",
    ),
    (
        "GV.RM-03",
        "Cybersecurity risk management activities and outcomes are included in enterprise risk management processes",
    ),
    (
        "GV.RM-04",
        "Strategic direction that describes appropriate risk response options is established and communicated",
    ),
    (
        "GV.RM-05",
        "Lines of communication across the organization are established for cybersecurity risks, including risks from suppliers and other third parties",
    ),
    (
        "GV.RM-06",
        "A standardized method for calculating, documenting, categorizing, and prioritizing cybersecurity risks is established and communicated",
    ),
    (
        "GV.RM-07",
        "Strategic opportunities (i.e., positive risks) are characterized and are included in organizational cybersecurity risk discussions",
    ),
    // Roles, Responsibilities, and Authorities (GV.RR)
    (
        "GV.RR-01",
        "Organizational leadership is responsible and accountable for cybersecurity risk and fosters a culture that is risk-aware, ethical, and continually improving",
    ),
    (
        "GV.RR-02",
        "Roles, responsibilities, and authorities related to cybersecurity risk management are established, communicated, understood, and enforced",
    ),
    (
        "GV.RR-03",
        "Adequate resources are allocated commensurate with the cybersecurity risk strategy, roles, responsibilities, and policies",
    ),
    (
        "GV.RR-04",
        "Cybersecurity is included in human resources practices",
    ),
    // Policy (GV.PO)
    (
        "GV.PO-01",
        "Policy for managing cybersecurity risks is established based on organizational context, cybersecurity strategy, and priorities and is communicated and enforced",
    ),
    (
        "GV.PO-02",
        "Policy for managing cybersecurity risks is reviewed, updated, communicated, and enforced to reflect changes in requirements, threats, technology, and organizational mission",
    ),
    // Oversight (GV.OV)
    (
        "GV.OV-01",
        "Cybersecurity risk management strategy outcomes are reviewed to inform and adjust strategy and direction",
    ),
    (
        "GV.OV-02",
        "The cybersecurity risk management strategy is reviewed and adjusted to ensure coverage of organizational requirements and risks",
    ),
    (
        "GV.OV-03",
        "Organizational cybersecurity risk management performance is evaluated and reviewed for adjustments needed",
    ),
    // Cybersecurity Supply Chain Risk Management (GV.SC)
    (
        "GV.SC-01",
        "A cybersecurity supply chain risk management program, strategy, objectives, policies, and processes are established and agreed to by organizational stakeholders",
    ),
    (
        "GV.SC-02",
        "Cybersecurity roles and responsibilities for suppliers, customers, and partners are established, communicated, and coordinated internally and externally",
    ),
    (
        "GV.SC-03",
        "Cybersecurity supply chain risk management is integrated into cybersecurity and enterprise risk management, risk assessment, and improvement processes",
    ),
    (
        "GV.SC-04",
        "Suppliers are known and prioritized by criticality",
    ),
    (
        "GV.SC-05",
        "Requirements to address cybersecurity risks in supply chains are established, prioritized, and integrated into contracts and other types of agreements with suppliers and other relevant third parties",
    ),
    (
        "GV.SC-06",
        "Planning and due diligence are performed to reduce risks before entering into formal supplier or other third-party relationships",
    ),
    (
        "GV.SC-07",
        "The risks posed by a supplier, their products and services, and other third parties are understood, recorded, prioritized, assessed, responded to, and monitored over the course of the relationship",
    ),
    (
        "GV.SC-08",
        "Relevant suppliers and other third parties are included in incident planning, response, and recovery activities",
    ),
    (
        "GV.SC-09",
        "Supply chain security practices are integrated into cybersecurity and enterprise risk management programs, and their performance is monitored throughout the technology product and service life cycle",
    ),
    (
        "GV.SC-10",
        "Cybersecurity supply chain risk management plans include provisions for activities that occur after the conclusion of a partnership or service agreement",
    ),
    // IDENTIFY (ID) - Asset Management (ID.AM); ID.AM-06 is withdrawn
    (
        "ID.AM-01",
        "Inventories of hardware managed by the organization are maintained",
    ),
    (
        "ID.AM-02",
        "Inventories of software, services, and systems managed by the organization are maintained",
    ),
    (
        "ID.AM-03",
        "Representations of the organization's authorized network communication and internal and external network data flows are maintained",
    ),
    (
        "ID.AM-04",
        "Inventories of services provided by suppliers are maintained",
    ),
    (
        "ID.AM-05",
        "Assets are prioritized based on classification, criticality, resources, and impact on the mission",
    ),
    (
        "ID.AM-07",
        "Inventories of data and corresponding metadata for designated data types are maintained",
    ),
    (
        "ID.AM-08",
        "Systems, hardware, software, services, and data are managed throughout their life cycles",
    ),
    // Risk Assessment (ID.RA)
    (
        "ID.RA-01",
        "Vulnerabilities in assets are identified, validated, and recorded",
    ),
    (
        "ID.RA-02",
        "Cyber threat intelligence is received from information sharing forums and sources",
    ),
    (
        "ID.RA-03",
        "Internal and external threats to the organization are identified and recorded",
    ),
    (
        "ID.RA-04",
        "Potential impacts and likelihoods of threats exploiting vulnerabilities are identified and recorded",
    ),
    (
        "ID.RA-05",
        "Threats, vulnerabilities, likelihoods, and impacts are used to understand inherent risk and inform risk response prioritization",
    ),
    (
        "ID.RA-06",
        "Risk responses are chosen, prioritized, planned, tracked, and communicated",
    ),
    (
        "ID.RA-07",
        "Changes and exceptions are managed, assessed for risk impact, recorded, and tracked",
    ),
    (
        "ID.RA-08",
        "Processes for receiving, analyzing, and responding to vulnerability disclosures are established",
    ),
    (
        "ID.RA-09",
        "The authenticity and integrity of hardware and software are assessed prior to acquisition and use",
    ),
    (
        "ID.RA-10",
        "Critical suppliers are assessed prior to acquisition",
    ),
    // Improvement (ID.IM)
    ("ID.IM-01", "Improvements are identified from evaluations"),
    (
        "ID.IM-02",
        "Improvements are identified from security tests and exercises, including those done in coordination with suppliers and relevant third parties",
    ),
    (
        "ID.IM-03",
        "Improvements are identified from execution of operational processes, procedures, and activities",
    ),
    (
        "ID.IM-04",
        "Incident response plans and other cybersecurity plans that affect operations are established, communicated, maintained, and improved",
    ),
    // PROTECT (PR) - Identity Management, Authentication, and Access Control (PR.AA)
    (
        "PR.AA-01",
        "Identities and credentials for authorized users, services, and hardware are managed by the organization",
    ),
    (
        "PR.AA-02",
        "Identities are proofed and bound to credentials based on the context of interactions",
    ),
    (
        "PR.AA-03",
        "Users, services, and hardware are authenticated",
    ),
    (
        "PR.AA-04",
        "Identity assertions are protected, conveyed, and verified",
    ),
    (
        "PR.AA-05",
        "Access permissions, entitlements, and authorizations are defined in a policy, managed, enforced, and reviewed, and incorporate the principles of least privilege and separation of duties",
    ),
    (
        "PR.AA-06",
        "Physical access to assets is managed, monitored, and enforced commensurate with risk",
    ),
    // Awareness and Training (PR.AT)
    (
        "PR.AT-01",
        "Personnel are provided with awareness and training so that they possess the knowledge and skills to perform general tasks with cybersecurity risks in mind",
    ),
    (
        "PR.AT-02",
        "Individuals in specialized roles are provided with awareness and training so that they possess the knowledge and skills to perform relevant tasks with cybersecurity risks in mind",
    ),
    // Data Security (PR.DS); PR.DS-03..08 are withdrawn
    (
        "PR.DS-01",
        "The confidentiality, integrity, and availability of data-at-rest are protected",
    ),
    (
        "PR.DS-02",
        "The confidentiality, integrity, and availability of data-in-transit are protected",
    ),
    (
        "PR.DS-10",
        "The confidentiality, integrity, and availability of data-in-use are protected",
    ),
    (
        "PR.DS-11",
        "Backups of data are created, protected, maintained, and tested",
    ),
    // Platform Security (PR.PS)
    (
        "PR.PS-01",
        "Configuration management practices are established and applied",
    ),
    (
        "PR.PS-02",
        "Software is maintained, replaced, and removed commensurate with risk",
    ),
    (
        "PR.PS-03",
        "Hardware is maintained, replaced, and removed commensurate with risk",
    ),
    (
        "PR.PS-04",
        "Log records are generated and made available for continuous monitoring",
    ),
    (
        "PR.PS-05",
        "Installation and execution of unauthorized software are prevented",
    ),
    (
        "PR.PS-06",
        "Secure software development practices are integrated, and their performance is monitored throughout the software development life cycle",
    ),
    // Technology Infrastructure Resilience (PR.IR)
    (
        "PR.IR-01",
        "Networks and environments are protected from unauthorized logical access and usage",
    ),
    (
        "PR.IR-02",
        "The organization's technology assets are protected from environmental threats",
    ),
    (
        "PR.IR-03",
        "Mechanisms are implemented to achieve resilience requirements in normal and adverse situations",
    ),
    (
        "PR.IR-04",
        "Adequate resource capacity to ensure availability is maintained",
    ),
    // DETECT (DE) - Continuous Monitoring (DE.CM)
    (
        "DE.CM-01",
        "Networks and network services are monitored to find potentially adverse events",
    ),
    (
        "DE.CM-02",
        "The physical environment is monitored to find potentially adverse events",
    ),
    (
        "DE.CM-03",
        "Personnel activity and technology usage are monitored to find potentially adverse events",
    ),
    (
        "DE.CM-06",
        "External service provider activities and services are monitored to find potentially adverse events",
    ),
    (
        "DE.CM-09",
        "Computing hardware and software, runtime environments, and their data are monitored to find potentially adverse events",
    ),
    // Adverse Event Analysis (DE.AE)
    (
        "DE.AE-02",
        "Potentially adverse events are analyzed to better understand associated activities",
    ),
    (
        "DE.AE-03",
        "Information is correlated from multiple sources",
    ),
    (
        "DE.AE-04",
        "The estimated impact and scope of adverse events are understood",
    ),
    (
        "DE.AE-06",
        "Information on adverse events is provided to authorized staff and tools",
    ),
    (
        "DE.AE-07",
        "Cyber threat intelligence and other contextual information are integrated into the analysis",
    ),
    (
        "DE.AE-08",
        "Incidents are declared when adverse events meet the defined incident criteria",
    ),
    // RESPOND (RS) - Incident Management (RS.MA)
    (
        "RS.MA-01",
        "The incident response plan is executed in coordination with relevant third parties once an incident is declared",
    ),
    ("RS.MA-02", "Incident reports are triaged and validated"),
    ("RS.MA-03", "Incidents are categorized and prioritized"),
    ("RS.MA-04", "Incidents are escalated or elevated as needed"),
    (
        "RS.MA-05",
        "The criteria for initiating incident recovery are applied",
    ),
    // Incident Analysis (RS.AN)
    (
        "RS.AN-03",
        "Analysis is performed to establish what has taken place during an incident and the root cause of the incident",
    ),
    (
        "RS.AN-06",
        "Actions performed during an investigation are recorded, and the records' integrity and provenance are preserved",
    ),
    (
        "RS.AN-07",
        "Incident data and metadata are collected, and their integrity and provenance are preserved",
    ),
    (
        "RS.AN-08",
        "An incident's magnitude is estimated and validated",
    ),
    // Incident Response Reporting and Communication (RS.CO)
    (
        "RS.CO-02",
        "Internal and external stakeholders are notified of incidents",
    ),
    (
        "RS.CO-03",
        "Information is shared with designated internal and external stakeholders",
    ),
    // Incident Mitigation (RS.MI)
    ("RS.MI-01", "Incidents are contained"),
    ("RS.MI-02", "Incidents are eradicated"),
    // RECOVER (RC) - Incident Recovery Plan Execution (RC.RP)
    (
        "RC.RP-01",
        "The recovery portion of the incident response plan is executed once initiated from the incident response process",
    ),
    (
        "RC.RP-02",
        "Recovery actions are selected, scoped, prioritized, and performed",
    ),
    (
        "RC.RP-03",
        "The integrity of backups and other restoration assets is verified before using them for restoration",
    ),
    (
        "RC.RP-04",
        "Critical mission functions and cybersecurity risk management are considered to establish post-incident operational norms",
    ),
    (
        "RC.RP-05",
        "The integrity of restored assets is verified, systems and services are restored, and normal operating status is confirmed",
    ),
    (
        "RC.RP-06",
        "The end of incident recovery is declared based on criteria, and incident-related documentation is completed",
    ),
    // Incident Recovery Communication (RC.CO)
    (
        "RC.CO-03",
        "Recovery activities and progress in restoring operational capabilities are communicated to designated internal and external stakeholders",
    ),
    (
        "RC.CO-04",
        "Public updates on incident recovery are shared using approved methods and messaging",
    ),
];

/// NIST CSF 1.1 subcategory ids that guidance still cites, each with its 1.1 text and the
/// CSF 2.0 subcategory ids that succeed it.
///
/// All 108 CSF 1.1 subcategories are listed. One that CSF 2.0 kept keeps its number (zero-padded
/// in 2.0). One that CSF 2.0 withdrew maps to the subcategories its withdrawal marker names;
/// where a marker names a whole category (`GV.PO`, `GV.RR`, `ID.IM`, `DE.AE`), the category's
/// subcategories stand in for it, or are dropped when the marker already names them.
pub(crate) static NIST_CSF_1_1: &[(&str, &str, &[&str])] = &[
    // IDENTIFY - Asset Management (ID.AM)
    (
        "ID.AM-1",
        "Physical devices and systems within the organization are inventoried",
        &["ID.AM-01"],
    ),
    (
        "ID.AM-2",
        "Software platforms and applications within the organization are inventoried",
        &["ID.AM-02"],
    ),
    (
        "ID.AM-3",
        "Organizational communication and data flows are mapped",
        &["ID.AM-03"],
    ),
    (
        "ID.AM-4",
        "External information systems are catalogued",
        &["ID.AM-04"],
    ),
    (
        "ID.AM-5",
        "Resources (e.g., hardware, devices, data, time, personnel, and software) are prioritized based on their classification, criticality, and business value",
        &["ID.AM-05"],
    ),
    (
        "ID.AM-6",
        "Cybersecurity roles and responsibilities for the entire workforce and third-party stakeholders (e.g., suppliers, customers, partners) are established",
        &["GV.RR-02", "GV.SC-02"],
    ),
    // Business Environment (ID.BE)
    (
        "ID.BE-1",
        "The organization's role in the supply chain is identified and communicated",
        &["GV.OC-05"],
    ),
    (
        "ID.BE-2",
        "The organization's place in critical infrastructure and its industry sector is identified and communicated",
        &["GV.OC-01"],
    ),
    (
        "ID.BE-3",
        "Priorities for organizational mission, objectives, and activities are established and communicated",
        &["GV.OC-01"],
    ),
    (
        "ID.BE-4",
        "Dependencies and critical functions for delivery of critical services are established",
        &["GV.OC-04", "GV.OC-05"],
    ),
    (
        "ID.BE-5",
        "Resilience requirements to support delivery of critical services are established for all operating states (e.g. under duress/attack, during recovery, normal operations)",
        &["GV.OC-04"],
    ),
    // Governance (ID.GV)
    (
        "ID.GV-1",
        "Organizational cybersecurity policy is established and communicated",
        &["GV.PO-01", "GV.PO-02"],
    ),
    (
        "ID.GV-2",
        "Cybersecurity roles and responsibilities are coordinated and aligned with internal roles and external partners",
        &["GV.OC-02", "GV.RR-02"],
    ),
    (
        "ID.GV-3",
        "Legal and regulatory requirements regarding cybersecurity, including privacy and civil liberties obligations, are understood and managed",
        &["GV.OC-03"],
    ),
    (
        "ID.GV-4",
        "Governance and risk management processes address cybersecurity risks",
        &["GV.RM-04"],
    ),
    // Risk Assessment (ID.RA)
    (
        "ID.RA-1",
        "Asset vulnerabilities are identified and documented",
        &["ID.RA-01"],
    ),
    (
        "ID.RA-2",
        "Cyber threat intelligence is received from information sharing forums and sources",
        &["ID.RA-02"],
    ),
    (
        "ID.RA-3",
        "Threats, both internal and external, are identified and documented",
        &["ID.RA-03"],
    ),
    (
        "ID.RA-4",
        "Potential business impacts and likelihoods are identified",
        &["ID.RA-04"],
    ),
    (
        "ID.RA-5",
        "Threats, vulnerabilities, likelihoods, and impacts are used to determine risk",
        &["ID.RA-05"],
    ),
    (
        "ID.RA-6",
        "Risk responses are identified and prioritized",
        &["ID.RA-06"],
    ),
    // Risk Management Strategy (ID.RM)
    (
        "ID.RM-1",
        "Risk management processes are established, managed, and agreed to by organizational stakeholders",
        &["GV.RM-01", "GV.RM-06", "GV.RR-03"],
    ),
    (
        "ID.RM-2",
        "Organizational risk tolerance is determined and clearly expressed",
        &["GV.RM-02", "GV.RM-04"],
    ),
    (
        "ID.RM-3",
        "The organization's determination of risk tolerance is informed by its role in critical infrastructure and sector specific risk analysis",
        &["GV.RM-02"],
    ),
    // Supply Chain Risk Management (ID.SC)
    (
        "ID.SC-1",
        "Cyber supply chain risk management processes are identified, established, assessed, managed, and agreed to by organizational stakeholders",
        &["GV.RM-05", "GV.SC-01", "GV.SC-06", "GV.SC-09", "GV.SC-10"],
    ),
    (
        "ID.SC-2",
        "Suppliers and third party partners of information systems, components, and services are identified, prioritized, and assessed using a cyber supply chain risk assessment process",
        &["GV.OC-02", "GV.SC-03", "GV.SC-04", "GV.SC-07", "ID.RA-10"],
    ),
    (
        "ID.SC-3",
        "Contracts with suppliers and third-party partners are used to implement appropriate measures designed to meet the objectives of an organization's cybersecurity program and Cyber Supply Chain Risk Management Plan",
        &["GV.SC-05"],
    ),
    (
        "ID.SC-4",
        "Suppliers and third-party partners are routinely assessed using audits, test results, or other forms of evaluations to confirm they are meeting their contractual obligations",
        &["GV.SC-07", "ID.RA-10"],
    ),
    (
        "ID.SC-5",
        "Response and recovery planning and testing are conducted with suppliers and third-party providers",
        &["GV.SC-08", "ID.IM-02"],
    ),
    // PROTECT - Identity Management, Authentication and Access Control (PR.AC)
    (
        "PR.AC-1",
        "Identities and credentials are issued, managed, verified, revoked, and audited for authorized devices, users and processes",
        &["PR.AA-01", "PR.AA-05"],
    ),
    (
        "PR.AC-2",
        "Physical access to assets is managed and protected",
        &["PR.AA-06"],
    ),
    (
        "PR.AC-3",
        "Remote access is managed",
        &["PR.AA-03", "PR.AA-05", "PR.IR-01"],
    ),
    (
        "PR.AC-4",
        "Access permissions and authorizations are managed, incorporating the principles of least privilege and separation of duties",
        &["PR.AA-05"],
    ),
    (
        "PR.AC-5",
        "Network integrity is protected (e.g., network segregation, network segmentation)",
        &["PR.IR-01"],
    ),
    (
        "PR.AC-6",
        "Identities are proofed and bound to credentials and asserted in interactions",
        &["PR.AA-02"],
    ),
    (
        "PR.AC-7",
        "Users, devices, and other assets are authenticated (e.g., single-factor, multi-factor) commensurate with the risk of the transaction (e.g., individuals' security and privacy risks and other organizational risks)",
        &["PR.AA-03"],
    ),
    // Awareness and Training (PR.AT)
    (
        "PR.AT-1",
        "All users are informed and trained",
        &["PR.AT-01"],
    ),
    (
        "PR.AT-2",
        "Privileged users understand their roles and responsibilities",
        &["PR.AT-02"],
    ),
    (
        "PR.AT-3",
        "Third-party stakeholders (e.g., suppliers, customers, partners) understand their roles and responsibilities",
        &["PR.AT-01", "PR.AT-02"],
    ),
    (
        "PR.AT-4",
        "Senior executives understand their roles and responsibilities",
        &["PR.AT-02"],
    ),
    (
        "PR.AT-5",
        "Physical and cybersecurity personnel understand their roles and responsibilities",
        &["PR.AT-02"],
    ),
    // Data Security (PR.DS)
    ("PR.DS-1", "Data-at-rest is protected", &["PR.DS-01"]),
    ("PR.DS-2", "Data-in-transit is protected", &["PR.DS-02"]),
    (
        "PR.DS-3",
        "Assets are formally managed throughout removal, transfers, and disposition",
        &["ID.AM-08", "PR.PS-03"],
    ),
    (
        "PR.DS-4",
        "Adequate capacity to ensure availability is maintained",
        &["PR.IR-04"],
    ),
    (
        "PR.DS-5",
        "Protections against data leaks are implemented",
        &["PR.DS-01", "PR.DS-02", "PR.DS-10"],
    ),
    (
        "PR.DS-6",
        "Integrity checking mechanisms are used to verify software, firmware, and information integrity",
        &["PR.DS-01", "DE.CM-09"],
    ),
    (
        "PR.DS-7",
        "The development and testing environment(s) are separate from the production environment",
        &["PR.IR-01"],
    ),
    (
        "PR.DS-8",
        "Integrity checking mechanisms are used to verify hardware integrity",
        &["ID.RA-09", "DE.CM-09"],
    ),
    // Information Protection Processes and Procedures (PR.IP)
    (
        "PR.IP-1",
        "A baseline configuration of information technology/industrial control systems is created and maintained incorporating security principles (e.g. concept of least functionality)",
        &["PR.PS-01"],
    ),
    (
        "PR.IP-2",
        "A System Development Life Cycle to manage systems is implemented",
        &["ID.AM-08", "PR.PS-06"],
    ),
    (
        "PR.IP-3",
        "Configuration change control processes are in place",
        &["PR.PS-01", "ID.RA-07"],
    ),
    (
        "PR.IP-4",
        "Backups of information are conducted, maintained, and tested",
        &["PR.DS-11"],
    ),
    (
        "PR.IP-5",
        "Policy and regulations regarding the physical operating environment for organizational assets are met",
        &["PR.IR-02"],
    ),
    (
        "PR.IP-6",
        "Data is destroyed according to policy",
        &["ID.AM-08"],
    ),
    (
        "PR.IP-7",
        "Protection processes are improved",
        &["ID.IM-03"],
    ),
    (
        "PR.IP-8",
        "Effectiveness of protection technologies is shared",
        &["ID.IM-03"],
    ),
    (
        "PR.IP-9",
        "Response plans (Incident Response and Business Continuity) and recovery plans (Incident Recovery and Disaster Recovery) are in place and managed",
        &["ID.IM-04"],
    ),
    (
        "PR.IP-10",
        "Response and recovery plans are tested",
        &["ID.IM-02", "ID.IM-04"],
    ),
    (
        "PR.IP-11",
        "Cybersecurity is included in human resources practices (e.g., deprovisioning, personnel screening)",
        &["GV.RR-04"],
    ),
    (
        "PR.IP-12",
        "A vulnerability management plan is developed and implemented",
        &["ID.RA-01", "PR.PS-02"],
    ),
    // Maintenance (PR.MA)
    (
        "PR.MA-1",
        "Maintenance and repair of organizational assets are performed and logged, with approved and controlled tools",
        &["ID.AM-08", "PR.PS-03"],
    ),
    (
        "PR.MA-2",
        "Remote maintenance of organizational assets is approved, logged, and performed in a manner that prevents unauthorized access",
        &["ID.AM-08", "PR.PS-02"],
    ),
    // Protective Technology (PR.PT)
    (
        "PR.PT-1",
        "Audit/log records are determined, documented, implemented, and reviewed in accordance with policy",
        &["PR.PS-04"],
    ),
    (
        "PR.PT-2",
        "Removable media is protected and its use restricted according to policy",
        &["PR.DS-01", "PR.PS-01"],
    ),
    (
        "PR.PT-3",
        "The principle of least functionality is incorporated by configuring systems to provide only essential capabilities",
        &["PR.PS-01"],
    ),
    (
        "PR.PT-4",
        "Communications and control networks are protected",
        &["PR.AA-06", "PR.IR-01"],
    ),
    (
        "PR.PT-5",
        "Mechanisms (e.g., failsafe, load balancing, hot swap) are implemented to achieve resilience requirements in normal and adverse situations",
        &["PR.IR-03"],
    ),
    // DETECT - Anomalies and Events (DE.AE)
    (
        "DE.AE-1",
        "A baseline of network operations and expected data flows for users and systems is established and managed",
        &["ID.AM-03"],
    ),
    (
        "DE.AE-2",
        "Detected events are analyzed to understand attack targets and methods",
        &["DE.AE-02"],
    ),
    (
        "DE.AE-3",
        "Event data are collected and correlated from multiple sources and sensors",
        &["DE.AE-03"],
    ),
    ("DE.AE-4", "Impact of events is determined", &["DE.AE-04"]),
    (
        "DE.AE-5",
        "Incident alert thresholds are established",
        &["DE.AE-08"],
    ),
    // Security Continuous Monitoring (DE.CM)
    (
        "DE.CM-1",
        "The network is monitored to detect potential cybersecurity events",
        &["DE.CM-01"],
    ),
    (
        "DE.CM-2",
        "The physical environment is monitored to detect potential cybersecurity events",
        &["DE.CM-02"],
    ),
    (
        "DE.CM-3",
        "Personnel activity is monitored to detect potential cybersecurity events",
        &["DE.CM-03"],
    ),
    (
        "DE.CM-4",
        "Malicious code is detected",
        &["DE.CM-01", "DE.CM-09"],
    ),
    (
        "DE.CM-5",
        "Unauthorized mobile code is detected",
        &["DE.CM-01", "DE.CM-09"],
    ),
    (
        "DE.CM-6",
        "External service provider activity is monitored to detect potential cybersecurity events",
        &["DE.CM-06"],
    ),
    (
        "DE.CM-7",
        "Monitoring for unauthorized personnel, connections, devices, and software is performed",
        &["DE.CM-01", "DE.CM-03", "DE.CM-06", "DE.CM-09"],
    ),
    (
        "DE.CM-8",
        "Vulnerability scans are performed",
        &["ID.RA-01"],
    ),
    // Detection Processes (DE.DP); DE.DP-2 was incorporated into the DE.AE category as a whole
    (
        "DE.DP-1",
        "Roles and responsibilities for detection are well defined to ensure accountability",
        &["GV.RR-02"],
    ),
    (
        "DE.DP-2",
        "Detection activities comply with all applicable requirements",
        &[
            "DE.AE-02", "DE.AE-03", "DE.AE-04", "DE.AE-06", "DE.AE-07", "DE.AE-08",
        ],
    ),
    ("DE.DP-3", "Detection processes are tested", &["ID.IM-02"]),
    (
        "DE.DP-4",
        "Event detection information is communicated",
        &["DE.AE-06"],
    ),
    (
        "DE.DP-5",
        "Detection processes are continuously improved",
        &["ID.IM-03"],
    ),
    // RESPOND - Response Planning (RS.RP)
    (
        "RS.RP-1",
        "Response plan is executed during or after an incident",
        &["RS.MA-01"],
    ),
    // Communications (RS.CO)
    (
        "RS.CO-1",
        "Personnel know their roles and order of operations when a response is needed",
        &["PR.AT-01"],
    ),
    (
        "RS.CO-2",
        "Incidents are reported consistent with established criteria",
        &["RS.CO-02"],
    ),
    (
        "RS.CO-3",
        "Information is shared consistent with response plans",
        &["RS.CO-03"],
    ),
    (
        "RS.CO-4",
        "Coordination with stakeholders occurs consistent with response plans",
        &["RS.MA-01", "RS.MA-04"],
    ),
    (
        "RS.CO-5",
        "Voluntary information sharing occurs with external stakeholders to achieve broader cybersecurity situational awareness",
        &["RS.CO-03"],
    ),
    // Analysis (RS.AN)
    (
        "RS.AN-1",
        "Notifications from detection systems are investigated",
        &["RS.MA-02"],
    ),
    (
        "RS.AN-2",
        "The impact of the incident is understood",
        &["RS.MA-02", "RS.MA-03", "RS.MA-04"],
    ),
    ("RS.AN-3", "Forensics are performed", &["RS.AN-03"]),
    (
        "RS.AN-4",
        "Incidents are categorized consistent with response plans",
        &["RS.MA-03"],
    ),
    (
        "RS.AN-5",
        "Processes are established to receive, analyze and respond to vulnerabilities disclosed to the organization from internal and external sources (e.g. internal testing, security bulletins, or security researchers)",
        &["ID.RA-08"],
    ),
    // Mitigation (RS.MI)
    ("RS.MI-1", "Incidents are contained", &["RS.MI-01"]),
    ("RS.MI-2", "Incidents are mitigated", &["RS.MI-02"]),
    (
        "RS.MI-3",
        "Newly identified vulnerabilities are mitigated or documented as accepted risks",
        &["ID.RA-06"],
    ),
    // Improvements (RS.IM)
    (
        "RS.IM-1",
        "Response plans incorporate lessons learned",
        &["ID.IM-03", "ID.IM-04"],
    ),
    ("RS.IM-2", "Response strategies are updated", &["ID.IM-03"]),
    // RECOVER - Recovery Planning (RC.RP)
    (
        "RC.RP-1",
        "Recovery plan is executed during or after a cybersecurity incident",
        &["RC.RP-01"],
    ),
    // Improvements (RC.IM)
    (
        "RC.IM-1",
        "Recovery plans incorporate lessons learned",
        &["ID.IM-03", "ID.IM-04"],
    ),
    ("RC.IM-2", "Recovery strategies are updated", &["ID.IM-03"]),
    // Communications (RC.CO)
    ("RC.CO-1", "Public relations are managed", &["RC.CO-04"]),
    (
        "RC.CO-2",
        "Reputation is repaired after an incident",
        &["RC.CO-04"],
    ),
    (
        "RC.CO-3",
        "Recovery activities are communicated to internal and external stakeholders as well as executive and management teams",
        &["RC.CO-03"],
    ),
];
